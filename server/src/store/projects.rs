//! Research projects and their members.

use sqlx::{AnyConnection, Row};

use super::now_rfc3339;
use crate::error::{ApiError, ApiResult};

/// Creates a project; a taken id is a 409.
pub async fn insert(conn: &mut AnyConnection, id: &str, title: &str, by: &str) -> ApiResult<()> {
    let n = sqlx::query(
        "INSERT INTO projects (id, title, created_by, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(title)
    .bind(by)
    .bind(now_rfc3339())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(ApiError::conflict(
            "project.exists",
            format!("project {id:?} already exists"),
        ));
    }
    Ok(())
}

/// Adds a member.
pub async fn add_member(conn: &mut AnyConnection, project: &str, account: &str) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO project_members (project, account) VALUES ($1, $2)
         ON CONFLICT (project, account) DO NOTHING",
    )
    .bind(project)
    .bind(account)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A project's title, or a 404.
pub async fn title(conn: &mut AnyConnection, project: &str) -> ApiResult<String> {
    let row = sqlx::query("SELECT title FROM projects WHERE id = $1")
        .bind(project)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no project {project:?}")))?;
    Ok(row.try_get("title")?)
}

/// A project's members.
pub async fn members(conn: &mut AnyConnection, project: &str) -> ApiResult<Vec<String>> {
    let rows =
        sqlx::query("SELECT account FROM project_members WHERE project = $1 ORDER BY account")
            .bind(project)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| Ok(r.try_get("account")?)).collect()
}

/// Whether `account` belongs to `project`.
pub async fn is_member(conn: &mut AnyConnection, project: &str, account: &str) -> ApiResult<bool> {
    let row =
        sqlx::query("SELECT 1 AS one FROM project_members WHERE project = $1 AND account = $2")
            .bind(project)
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.is_some())
}

//! Research projects and their members.

use sqlx::{AnyConnection, Row};

use super::StoreResult;

/// Creates a project; false (nothing written) if the id is taken.
pub async fn insert(
    conn: &mut AnyConnection,
    id: &str,
    title: &str,
    by: &str,
    at: &str,
) -> StoreResult<bool> {
    let n = sqlx::query(
        "INSERT INTO projects (id, title, created_by, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(title)
    .bind(by)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Adds a member.
pub async fn add_member(conn: &mut AnyConnection, project: &str, account: &str) -> StoreResult<()> {
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

/// A project's title, if it exists.
pub async fn title(conn: &mut AnyConnection, project: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT title FROM projects WHERE id = $1")
        .bind(project)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| r.try_get("title")).transpose()?)
}

/// A project's members.
pub async fn members(conn: &mut AnyConnection, project: &str) -> StoreResult<Vec<String>> {
    let rows =
        sqlx::query("SELECT account FROM project_members WHERE project = $1 ORDER BY account")
            .bind(project)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| Ok(r.try_get("account")?)).collect()
}

/// Whether `account` belongs to `project`.
pub async fn is_member(
    conn: &mut AnyConnection,
    project: &str,
    account: &str,
) -> StoreResult<bool> {
    let row =
        sqlx::query("SELECT 1 AS one FROM project_members WHERE project = $1 AND account = $2")
            .bind(project)
            .bind(account)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.is_some())
}

/// The projects `account` belongs to, with their titles.
pub async fn of_member(
    conn: &mut AnyConnection,
    account: &str,
) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT p.id, p.title FROM projects p JOIN project_members m ON m.project = p.id
         WHERE m.account = $1 ORDER BY p.id",
    )
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("title")?)))
        .collect()
}

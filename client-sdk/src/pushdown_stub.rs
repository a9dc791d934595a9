#![allow(missing_docs, dead_code, unused)]
use crate::evaluate::CompiledPlan;
use crate::schema::ColumnReader;
pub enum Dialect {
    Sqlite,
    Postgres,
}
pub struct PushdownQuery;
pub fn build(
    plan: &CompiledPlan,
    readers: &[ColumnReader],
    table: &str,
    resident: Option<&str>,
    order_by: Option<&str>,
    dialect: Dialect,
) -> Result<PushdownQuery, String> {
    Err("x".into())
}
pub async fn run_sqlite(
    pool: &sqlx::SqlitePool,
    q: &PushdownQuery,
    plan: &CompiledPlan,
) -> Result<(Vec<i64>, u64), String> {
    Err("x".into())
}
pub async fn run_postgres(
    pool: &sqlx::PgPool,
    q: &PushdownQuery,
    plan: &CompiledPlan,
) -> Result<(Vec<i64>, u64), String> {
    Err("x".into())
}

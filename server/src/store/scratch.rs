//! Throwaway PostgreSQL schemas for tests and benches (feature `test-util`): each run gets a
//! schema of its own in a shared database, so runs never see each other's rows.

/// Makes a fresh schema named after `tag` in the database at `base` and returns a store URL
/// that uses it.
pub async fn postgres_schema(base: &str, tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let schema = format!(
        "civic_{}_{}_{}",
        tag.replace('-', "_"),
        std::process::id(),
        nanos % 1_000_000_000
    );
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {base}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// Drops the schema of a URL made by [`postgres_schema`] (nothing for any other URL).
pub async fn drop_schema(url: &str) {
    let Some((base, schema)) = url.split_once("options[search_path]=") else {
        return;
    };
    let base = base.trim_end_matches(['?', '&']);
    if let Ok(pool) = sqlx::AnyPool::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

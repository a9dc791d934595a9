//! The store suite, run on SQLite and, when `CIVIC_TEST_POSTGRES_URL` is set (`.ci/run`
//! sets it), on PostgreSQL in a fresh schema: migrations, the ledger under concurrent
//! reservations, the audit chain under concurrent appends, dataset versions, tokens.

mod common;

use civic_api::Role;
use civic_policies::audit::{AuditEvent, ChainHead, verify_chain};
use civic_policies::{DatasetPolicy, Rho};
use civic_server::store::{Store, accounts, audit, budgets, datasets};
use common::{backends, drop_schema};
use serde_json::json;

fn city() -> DatasetPolicy {
    DatasetPolicy::from_toml(common::CITY_TOML, "city").unwrap()
}

#[actix_web::test]
async fn migrations_apply_once_and_a_second_start_finds_them_done() {
    for url in backends("migrate").await {
        let a = Store::connect(&url).await.unwrap();
        let b = Store::connect(&url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(b.pool())
                .await
                .unwrap();
        assert_eq!(
            versions,
            vec![1, 2],
            "each migration applied exactly once: {url}"
        );
        let lease: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM driver_lease")
            .fetch_one(b.pool())
            .await
            .unwrap();
        assert_eq!(lease, 1, "{url}");
        assert!(a.ping().await);
        drop_schema(&url).await;
    }
}

#[actix_web::test]
async fn concurrent_reservations_admit_exactly_what_the_caps_allow() {
    for url in backends("ledger").await {
        let store = Store::connect(&url).await.unwrap();
        let policy = city();
        let mut tx = store.begin().await.unwrap();
        datasets::insert(&mut tx, &policy, common::CITY_TOML, "test")
            .await
            .unwrap();
        budgets::upsert_caps(&mut tx, "city", policy.total, policy.per_query)
            .await
            .unwrap();
        budgets::update(&mut tx, "city", |l| {
            Ok(l.allocate("falls", Rho::cap(1000.0)?)?)
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        // 24 concurrent reservations of 90 against a cap of 1000: exactly 11 fit.
        let tasks: Vec<_> = (0..24u64)
            .map(|q| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut tx = store.begin().await?;
                    budgets::update(&mut tx, "city", |l| {
                        Ok(l.reserve(q, "falls", Rho::cost(90.0)?)?)
                    })
                    .await?;
                    tx.commit().await?;
                    Ok::<_, civic_server::error::ApiError>(())
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e.code, "policy.over_budget", "{url}: {e}"),
            }
        }
        assert_eq!(ok, 11, "{url}");
        let mut conn = store.pool().acquire().await.unwrap();
        let ledger = budgets::read(&mut conn, "city").await.unwrap();
        assert_eq!(
            ledger.project("falls").unwrap().reserved,
            Rho::from_units(11 * Rho::cost(90.0).unwrap().units()),
            "{url}"
        );
        // The totals are the sum of the entries.
        let reserves = ledger
            .entries()
            .iter()
            .filter(|e| e.kind == civic_policies::budget::EntryKind::Reserve)
            .count();
        assert_eq!(reserves, 11, "{url}");
        drop_schema(&url).await;
    }
}

#[actix_web::test]
async fn concurrent_audit_appends_keep_one_verifiable_chain() {
    for url in backends("audit").await {
        let store = Store::connect(&url).await.unwrap();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut tx = store.begin().await.unwrap();
                    let event = AuditEvent {
                        actor: format!("member-{}", i % 4),
                        action: "test.append".into(),
                        subject: format!("n:{i}"),
                        details: json!({ "i": i }),
                    };
                    audit::append(&mut tx, event).await.unwrap();
                    tx.commit().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut conn = store.pool().acquire().await.unwrap();
        let records = audit::page(&mut conn, 0, 1000).await.unwrap();
        assert_eq!(records.len(), 40, "{url}");
        let head = verify_chain(&ChainHead::genesis(), &records).unwrap();
        assert_eq!(head, audit::head(&mut conn).await.unwrap(), "{url}");
        // Tampering with a stored entry is found.
        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 17")
            .execute(&mut *conn)
            .await
            .unwrap();
        let records = audit::page(&mut conn, 0, 1000).await.unwrap();
        let err = verify_chain(&ChainHead::genesis(), &records).unwrap_err();
        assert!(err.to_string().contains("entry 17"), "{url}: {err}");
        drop_schema(&url).await;
    }
}

#[actix_web::test]
async fn dataset_versions_are_all_kept_and_tokens_are_stored_only_as_hashes() {
    for url in backends("versions").await {
        let store = Store::connect(&url).await.unwrap();
        let policy = city();
        let mut conn = store.pool().acquire().await.unwrap();
        assert_eq!(
            datasets::insert(&mut conn, &policy, "v1", "a")
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            datasets::insert(&mut conn, &policy, "v2", "b")
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            datasets::latest(&mut conn, "city")
                .await
                .unwrap()
                .unwrap()
                .version,
            2
        );
        assert_eq!(
            datasets::get(&mut conn, "city", 1)
                .await
                .unwrap()
                .created_by,
            "a"
        );

        let (account, token) = accounts::create(&mut conn, "alice", Role::Researcher)
            .await
            .unwrap();
        let found = accounts::by_token(&mut conn, token.reveal())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, account);
        assert!(
            accounts::by_token(&mut conn, &"0".repeat(64))
                .await
                .unwrap()
                .is_none()
        );
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT token_hash FROM accounts WHERE name = 'alice'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(stored.len(), 32);
        assert_ne!(stored, token.reveal().as_bytes().to_vec());
        assert!(!format!("{token:?}").contains(token.reveal()));
        let dup = accounts::create(&mut conn, "alice", Role::Admin)
            .await
            .unwrap_err();
        assert_eq!(dup.code, "account.exists", "{url}");
        drop_schema(&url).await;
    }
}

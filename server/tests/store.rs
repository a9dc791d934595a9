//! The store suite, run on SQLite and, when `CIVIC_TEST_POSTGRES_URL` is set (`.ci/run`
//! sets it), on PostgreSQL in a fresh schema: migrations, the ledger under concurrent
//! reservations, the audit chain under concurrent appends, dataset versions, tokens.

mod common;

use std::time::Duration;

use civic_api::Role;
use civic_policies::audit::{AuditEvent, ChainHead, verify_chain};
use civic_policies::budget::EntryKind;
use civic_policies::{DatasetPolicy, Ledger, Rho};
use civic_server::error::Error;
use civic_server::store::{NewToken, Store, StoreError, accounts, audit, budgets, datasets};
use common::{backends, drop_schema};
use serde_json::json;

const AT: &str = "2026-12-02T00:00:00.000Z";

async fn connect(url: &str) -> Store {
    Store::connect(url, Duration::from_secs(10)).await.unwrap()
}

fn city() -> DatasetPolicy {
    DatasetPolicy::from_toml(common::CITY_TOML, "city").unwrap()
}

#[actix_web::test]
async fn migrations_apply_once_and_a_second_start_finds_them_done() {
    for url in backends("migrate").await {
        let a = connect(&url).await;
        let b = connect(&url).await;
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(b.pool())
                .await
                .unwrap();
        assert_eq!(
            versions,
            vec![1, 2, 3, 4, 5, 6],
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
        let store = connect(&url).await;
        let policy = city();
        store
            .run_tx("set up", async |tx| {
                datasets::insert(tx, &policy, common::CITY_TOML, "test", AT).await?;
                let mut ledger = Ledger::new("city", policy.total, policy.per_query);
                budgets::create(tx, &ledger).await?;
                let entry = ledger.allocate("falls", Rho::cap(1000.0).unwrap()).unwrap();
                budgets::record(tx, &ledger, &entry, AT).await
            })
            .await
            .unwrap();
        // 24 concurrent reservations of 90 against a cap of 1000: exactly 11 fit.
        let tasks: Vec<_> = (1..=24i64)
            .map(|q| {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    store
                        .run_tx("reserve", async |tx| {
                            let mut ledger = budgets::lock(tx, "city").await?.unwrap();
                            let (_, entry) = ledger.reserve(q as u64, "falls", Rho::cost(90.0)?)?;
                            budgets::record(tx, &ledger, &entry, AT).await?;
                            Ok::<_, Error>(())
                        })
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(e) => assert_eq!(e.body().code, "policy.over_budget", "{url}: {e}"),
            }
        }
        assert_eq!(ok, 11, "{url}");
        let mut conn = store.read().await.unwrap();
        let ledger = budgets::read(&mut conn, "city").await.unwrap().unwrap();
        assert_eq!(
            ledger.project("falls").unwrap().reserved,
            Rho::from_units(11 * Rho::cost(90.0).unwrap().units()),
            "{url}"
        );
        // The totals are the sum of the entries, which are in their own table.
        let entries = budgets::entries(&mut conn, "city").await.unwrap();
        let reserves: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Reserve)
            .collect();
        assert_eq!(reserves.len(), 11, "{url}");
        let sum: u64 = reserves.iter().map(|e| e.amount.units()).sum();
        assert_eq!(ledger.project("falls").unwrap().reserved.units(), sum);
        // Each query's budget is read back from its entries; the table refuses a second
        // reservation of the same query.
        let q = reserves[0].query as i64;
        let held = budgets::held(&mut conn, q).await.unwrap().unwrap();
        assert_eq!(held.project, "falls");
        drop(conn);
        let again = store
            .run_tx("reserve twice", async |tx| {
                budgets::append_entry(tx, "city", reserves[0], AT).await
            })
            .await
            .unwrap_err();
        assert!(matches!(again, StoreError::Conflict), "{url}: {again}");
        drop_schema(&url).await;
    }
}

#[actix_web::test]
async fn concurrent_audit_appends_keep_one_verifiable_chain() {
    for url in backends("audit").await {
        let store = connect(&url).await;
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                actix_web::rt::spawn(async move {
                    let event = AuditEvent {
                        actor: format!("member-{}", i % 4),
                        action: "test.append".into(),
                        subject: format!("n:{i}"),
                        details: json!({ "i": i }),
                    };
                    store
                        .run_tx("append", async |tx| {
                            audit::append(tx, event.clone(), AT).await
                        })
                        .await
                        .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut conn = store.read().await.unwrap();
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
        let store = connect(&url).await;
        let policy = city();
        let token = NewToken::generate().unwrap();
        let (account, dup) = store
            .run_tx("versions and accounts", async |tx| {
                assert_eq!(datasets::insert(tx, &policy, "v1", "a", AT).await?, 1);
                assert_eq!(datasets::insert(tx, &policy, "v2", "b", AT).await?, 2);
                let account = accounts::create(tx, "alice", Role::Researcher, &token, AT)
                    .await?
                    .unwrap();
                let dup = accounts::create(tx, "alice", Role::Admin, &token, AT).await?;
                Ok::<_, StoreError>((account, dup))
            })
            .await
            .unwrap();
        assert!(dup.is_none(), "a taken name is refused: {url}");
        let mut conn = store.read().await.unwrap();
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
                .unwrap()
                .created_by,
            "a"
        );
        assert!(datasets::get(&mut conn, "city", 3).await.unwrap().is_none());
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
        drop(conn);
        drop_schema(&url).await;
    }
}

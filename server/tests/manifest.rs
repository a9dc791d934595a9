//! The coordinator stores and serves the board's manifests but cannot make one: only a
//! manifest with its board's signatures that follows the newest stored one is accepted. Once
//! one is published, approvals are board signatures over the query's fingerprint, counted by
//! member key however many accounts send them; rounds run only over manifest partners with
//! the manifest's keys and a policy the manifest signs.

mod common;

use civic_policies::manifest::{self, approval_message};
use common::{Coordinator, city_manifest, fresh_store_url, partner_keys, signed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[actix_web::test]
async fn only_manifests_signed_by_the_board_before_them_are_stored() {
    let c = Coordinator::start(&fresh_store_url("manifest-chain")).await;
    let m1 = city_manifest(&partner_keys(&c), common::CITY_TOML);
    // One member is not the threshold; an outsider's key does not count.
    let (s, v) = c.publish(&signed(m1.clone(), &[201])).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("manifest.invalid")),
        "{v}"
    );
    let mut padded = signed(m1.clone(), &[201]);
    padded.signatures.push(manifest::sign(
        &ed25519_dalek::SigningKey::from_bytes(&[77; 32]),
        &m1.signing_message(),
    ));
    let (s, _) = c.publish(&padded).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, chain) = c.call(Method::GET, "/v1/manifests", None, None).await;
    assert_eq!(chain["manifests"], json!([]), "nothing stored: {chain}");

    let (s, v) = c.publish(&signed(m1.clone(), &[201, 202])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["manifests"][0]["manifest"]["version"], 1);
    // The same version again, or a version 2 that does not name version 1's digest, or one
    // signed by a board that is not version 1's.
    let (s, v) = c.publish(&signed(m1.clone(), &[202, 203])).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("manifest.not_successor")),
        "{v}"
    );
    let mut m2 = m1.clone();
    m2.version = 2;
    m2.previous = Some("00".repeat(32));
    let (s, v) = c.publish(&signed(m2.clone(), &[201, 202])).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("manifest.not_successor")),
        "{v}"
    );
    m2.previous = Some(m1.digest());
    let (s, v) = c.publish(&signed(m2.clone(), &[77, 78])).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("manifest.invalid")),
        "{v}"
    );
    let (s, v) = c.publish(&signed(m2, &[203, 201])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Public, and audited.
    let (s, chain) = c.call(Method::GET, "/v1/manifests", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(chain["manifests"].as_array().unwrap().len(), 2);
    let (_, log) = c
        .call(Method::GET, "/v1/audit?limit=100", Some(&c.board[0]), None)
        .await;
    let published = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "manifest.publish")
        .count();
    assert_eq!(published, 2, "{log}");
    c.stop().await;
}

#[actix_web::test]
async fn under_a_manifest_approvals_are_signatures_of_distinct_members() {
    let (c, _) = common::federation("manifest-approvals").await;
    // ε = 80 costs ρ 3200, above the approval threshold (ρ 2500).
    let (s, q) = c.submit(common::count_query(80.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    assert_eq!(q["state"], "awaiting_approval");
    let id = q["id"].as_i64().unwrap();
    let path = format!("/v1/queries/{id}/decision");
    // No signature; a signature over another fingerprint.
    let (s, v) = c
        .call(
            Method::POST,
            &path,
            Some(&c.board[0]),
            Some(json!({ "approve": true, "reason": "ok" })),
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("decision.signature")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("civic-board approve"),
        "{v}"
    );
    let wrong = manifest::sign(&common::board_key(201), &approval_message(&"ab".repeat(32)));
    let (s, v) = c
        .call(
            Method::POST,
            &path,
            Some(&c.board[0]),
            Some(json!({ "approve": true, "reason": "ok", "signature": wrong })),
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("decision.signature")),
        "{v}"
    );
    // Member 201 approves through two accounts: one approval.
    let (s, v) = c.approve_signed(id, 201, 0).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c.approve_signed(id, 201, 1).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("query.already_decided")),
        "{v}"
    );
    let (s, v) = c.approve_signed(id, 203, 1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "running", "{v}");
    let members: Vec<&Value> = v["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["member"])
        .collect();
    assert_eq!(
        members,
        [&json!("board:member-201"), &json!("board:member-203")]
    );
    // The round's announcement carries both signatures, for the agents to check.
    let (_, rounds) = c
        .call(
            Method::GET,
            "/v1/partner/rounds",
            Some(&c.partners[0].2),
            None,
        )
        .await;
    assert_eq!(
        rounds["rounds"][0]["approvals"].as_array().unwrap().len(),
        2,
        "{rounds}"
    );
    c.stop().await;
}

#[actix_web::test]
async fn rounds_need_the_manifests_partners_keys_and_policy() {
    let c = Coordinator::start(&fresh_store_url("manifest-rounds")).await;
    // The manifest lists another key for housing-c than the one it will register.
    let mut keys = partner_keys(&c);
    keys[2].1 = hex::encode(civic_secagg::IdentityKey::from_seed(&[66; 32]).public().0);
    let (s, v) = c
        .publish(&signed(
            city_manifest(&keys, common::CITY_TOML),
            &[201, 202],
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/partner/identity",
            Some(&c.partners[2].2),
            Some(json!({ "public_key": hex::encode(civic_secagg::IdentityKey::from_seed(&[3; 32]).public().0) })),
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::CONFLICT,
            &json!("partner.identity_key_not_in_manifest")
        ),
        "{v}"
    );
    // A manifest raising the least cost per query to ρ 0.01 (the policy's floor is 10⁻⁴):
    // a count at ε = 0.1 (ρ 0.005) is refused before anything is reserved.
    let mut strict = city_manifest(&keys, common::CITY_TOML);
    strict.version = 2;
    strict.previous = Some(city_manifest(&keys, common::CITY_TOML).digest());
    strict.requirements.min_rho_per_query = 0.01;
    let (s, v) = c.publish(&signed(strict, &[202, 203])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c.submit(common::count_query(0.1)).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("query.below_floor")),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("the higher of the policy's floor and the board's"),
        "{v}"
    );
    // A preview is refused alike, and a target accuracy is priced at the board's floor, not
    // below it (where every agent would decline it).
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(common::count_query(0.1)),
        )
        .await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::BAD_REQUEST, &json!("query.below_floor")),
        "{v}"
    );
    let mut wide = common::count_query(0.1);
    wide["privacy"] =
        json!({ "target_half_width": { "half_width": 1e6, "mechanism": "gaussian" } });
    let (s, v) = c
        .call(
            Method::POST,
            "/v1/queries/preview",
            Some(&c.researcher),
            Some(wide),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rho = v["cost"]["rho"].as_f64().unwrap();
    assert!((0.01..0.0101).contains(&rho), "{v}");
    // A policy version the manifest does not sign: no round can be configured for it.
    let (s, v) = c
        .call(
            Method::PUT,
            "/v1/datasets/city",
            Some(&c.board[0]),
            Some(json!({ "policy": common::CITY_TOML.replace("title = \"City test cohort\"", "title = \"Changed\"") })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for (i, (_, _, token)) in c.partners.iter().enumerate().take(2) {
        let key = civic_secagg::IdentityKey::from_seed(&[i as u8 + 1; 32]);
        let (s, v) = c
            .call(
                Method::PUT,
                "/v1/partner/identity",
                Some(token),
                Some(json!({ "public_key": hex::encode(key.public().0) })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = c.submit(common::count_query(1.0)).await;
    assert_eq!(
        (s, &v["code"]),
        (
            StatusCode::CONFLICT,
            &json!("round.partner_not_in_manifest")
        ),
        "{v}"
    );
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("not the one the board's newest manifest signs"),
        "{v}"
    );
    c.stop().await;
}

#[actix_web::test]
async fn an_author_does_not_approve_their_own_query() {
    let c = Coordinator::start(&fresh_store_url("manifest-own-query")).await;
    // Board member 201 is the researcher who submits.
    let mut m = city_manifest(&partner_keys(&c), common::CITY_TOML);
    m.board.members[0].name = "rita".into();
    let (s, v) = c.publish(&signed(m, &[201, 202])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    c.register_partners().await;
    let (s, q) = c.submit(common::count_query(80.0)).await;
    assert_eq!(s, StatusCode::CREATED, "{q}");
    let id = q["id"].as_i64().unwrap();
    let head = c.call(Method::GET, "/v1/audit/head", None, None).await.1;
    let (s, v) = c.approve_signed(id, 201, 0).await;
    assert_eq!(
        (s, &v["code"]),
        (StatusCode::CONFLICT, &json!("decision.own_query")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("rita submitted"),
        "{v}"
    );
    assert_eq!(
        c.call(Method::GET, "/v1/audit/head", None, None).await.1,
        head
    );
    // Other members approve it.
    let (s, v) = c.approve_signed(id, 202, 0).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = c.approve_signed(id, 203, 1).await;
    assert_eq!((s, &v["state"]), (StatusCode::OK, &json!("running")), "{v}");
    c.stop().await;
}

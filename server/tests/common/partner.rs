//! A partner agent's protocol side, driven over HTTP with the real secagg client: what
//! `civic-agent` will do, minus local data (the test hands it the vector).

use std::collections::BTreeMap;
use std::time::Duration;

use civic_api::round::{Inbox, PartnerRounds, RosterEntry};
use civic_api::{decode_binary, encode_binary};
use civic_secagg::messages::ClientMessage;
use civic_secagg::{ClientRound, IdentityKey, IdentityPublicKey, PartnerId, RingVector, Roster};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub struct TestPartner {
    pub base: String,
    pub token: String,
    pub id: PartnerId,
    pub key: IdentityKey,
    pub http: reqwest::Client,
}

/// Where to stop, to simulate a dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    Never,
    BeforeMaskedInput,
    /// Goes on to the end, but first replays its AdvertiseKeys and sends a vector of the
    /// wrong length, and checks that both are refused.
    NeverButMisbehave,
    /// Goes on to the end, but every self-mask share it reveals is wrong (a cheating
    /// partner): the unmasked sum is garbage.
    NeverButWrongShares,
}

impl TestPartner {
    pub async fn register(base: &str, token: &str, id: u32, seed: u8) -> Self {
        let key = IdentityKey::from_seed(&[seed; 32]);
        let p = TestPartner {
            base: base.into(),
            token: token.into(),
            id: PartnerId(id),
            key,
            http: reqwest::Client::new(),
        };
        let res = p
            .http
            .put(format!("{base}/v1/partner/identity"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "public_key": hex::encode(p.key.public().0) }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        p
    }

    async fn roster(&self) -> Roster {
        let entries: Vec<RosterEntry> = self
            .http
            .get(format!("{}/v1/partners/roster", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        entries
            .into_iter()
            .filter_map(|e| {
                let k: [u8; 32] = hex::decode(e.identity_key?).ok()?.try_into().ok()?;
                Some((PartnerId(e.partner_id), IdentityPublicKey(k)))
            })
            .collect::<BTreeMap<_, _>>()
    }

    /// Sends, retrying while the coordinator is unreachable (a restart), as an agent would.
    async fn send(&self, req: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
        for _ in 0..400 {
            match req().bearer_auth(&self.token).send().await {
                // 503: the round is open but its driver is taking over; retry, as agents do.
                Ok(res) if res.status() != 503 => return res,
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!("the coordinator stayed unreachable");
    }

    async fn post(&self, round: i64, msg: ClientMessage) -> reqwest::Response {
        let body = encode_binary(&msg);
        let url = format!("{}/v1/partner/rounds/{round}/messages", self.base);
        self.send(|| self.http.post(&url).body(body.clone())).await
    }

    async fn inbox(&self, round: i64, want: fn(&Inbox) -> bool) -> Result<Inbox, String> {
        for _ in 0..800 {
            let url = format!("{}/v1/partner/rounds/{round}/inbox", self.base);
            let res = self.send(|| self.http.get(&url)).await;
            if res.status() != 200 {
                return Err(format!(
                    "inbox: {} {}",
                    res.status(),
                    res.text().await.unwrap()
                ));
            }
            let inbox: Inbox = decode_binary(&res.bytes().await.unwrap())?;
            if want(&inbox) {
                return Ok(inbox);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("timed out waiting for the inbox".into())
    }

    /// Waits for round `round` to be announced and takes part with `values`.
    pub async fn take_part(&self, round: i64, values: &[i64], stop: StopAt) -> Result<(), String> {
        let mut polls = 0;
        let ann = loop {
            polls += 1;
            if polls > 1200 {
                return Err(format!("round {round} was never announced"));
            }
            let url = format!("{}/v1/partner/rounds", self.base);
            let rounds: PartnerRounds = self
                .send(|| self.http.get(&url))
                .await
                .json()
                .await
                .unwrap();
            if let Some(a) = rounds.rounds.into_iter().find(|a| a.round_id == round) {
                break a;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let config = ann.config;
        let requirements = civic_secagg::testing::lenient_requirements(&config);
        let input = RingVector::from_signed(config.width, values).map_err(|e| e.to_string())?;
        let mut rng = ChaCha20Rng::from_seed([self.id.0 as u8 ^ 0x5a; 32]);
        let roster = self.roster().await;
        let (mut client, adv) =
            ClientRound::start(config, self.id, &self.key, roster, &requirements, &mut rng)
                .map_err(|e| e.to_string())?;
        let ok = |r: reqwest::Response| async move {
            if r.status() == 204 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status(), r.text().await.unwrap()))
            }
        };
        ok(self
            .post(round, ClientMessage::AdvertiseKeys(adv.clone()))
            .await)
        .await?;
        let Inbox::KeyRoster(keys) = self
            .inbox(round, |i| matches!(i, Inbox::KeyRoster(_)))
            .await?
        else {
            unreachable!()
        };
        let shares = client
            .handle_key_roster(&keys, &mut rng)
            .map_err(|e| e.to_string())?;
        ok(self.post(round, ClientMessage::ShareKeys(shares)).await).await?;
        // Having answered the open step, it is not sent the last step's output again.
        if let Inbox::KeyRoster(_) = self.inbox(round, |_| true).await? {
            return Err("the inbox sent the key roster again after ShareKeys".into());
        }
        let Inbox::ForwardedShares(fwd) = self
            .inbox(round, |i| matches!(i, Inbox::ForwardedShares(_)))
            .await?
        else {
            unreachable!()
        };
        if stop == StopAt::BeforeMaskedInput {
            return Ok(());
        }
        let masked = client
            .handle_forwarded_shares(&fwd, &input)
            .map_err(|e| e.to_string())?;
        ok(self.post(round, ClientMessage::MaskedInput(masked)).await).await?;
        let Inbox::SurvivorList(list) = self
            .inbox(round, |i| matches!(i, Inbox::SurvivorList(_)))
            .await?
        else {
            unreachable!()
        };
        let sig = client
            .handle_survivor_list(&list, &self.key)
            .map_err(|e| e.to_string())?;
        ok(self
            .post(round, ClientMessage::ConsistencySignature(sig))
            .await)
        .await?;
        let Inbox::SignedSurvivors(signed) = self
            .inbox(round, |i| matches!(i, Inbox::SignedSurvivors(_)))
            .await?
        else {
            unreachable!()
        };
        let mut reveal = client
            .handle_signed_survivors(&signed)
            .map_err(|e| e.to_string())?;
        if stop == StopAt::NeverButWrongShares {
            for share in &mut reveal.self_mask_shares {
                share.value[0] ^= 1;
            }
        }
        ok(self
            .post(round, ClientMessage::UnmaskingShares(reveal))
            .await)
        .await
    }
}

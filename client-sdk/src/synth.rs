//! A synthetic city-region population, deterministic from a seed, and each partner's
//! extract of it as a CSV: for rehearsing a deployment (`civic-agent synth`) and for the
//! Liverpool demo. The numbers are invented; the shapes follow what partners hold (GP
//! federations register adults; the acute trust sees admissions; the community and
//! mental-health trust holds housing records linked to its patients; council adult social
//! care holds care packages), and a resident appears in several partners' data.

use std::io::Write;
use std::path::Path;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// One synthetic resident.
#[derive(Clone, Debug, PartialEq)]
pub struct Resident {
    /// Pseudonymous id.
    pub id: u32,
    /// Age in years.
    pub age: u32,
    /// "female" or "male".
    pub sex: &'static str,
    /// Index of Multiple Deprivation decile of the neighbourhood, 1 (most deprived) to 10.
    pub decile: u32,
    /// The GP federation the resident is registered with (index into [`GP_FEDERATIONS`]).
    pub gp: usize,
    /// On the diabetes register.
    pub diabetes: bool,
    /// Latest HbA1c (mmol/mol), if measured.
    pub hba1c: Option<f64>,
    /// On the COPD register.
    pub copd: bool,
    /// Lives alone.
    pub lives_alone: bool,
    /// Home adaptations installed.
    pub home_adaptations: u32,
    /// Property type.
    pub property_type: &'static str,
    /// Tenure.
    pub tenure: &'static str,
    /// Damp and mould reports in the last year.
    pub damp_mould_reports: u32,
    /// Emergency respiratory admissions in the last year.
    pub respiratory_admissions: u32,
    /// Emergency admissions for a fall in the last year.
    pub falls_admissions: u32,
    /// Receives a council care package.
    pub care_package: bool,
}

/// The GP federations, each registering the adults of its neighbourhoods.
pub const GP_FEDERATIONS: [&str; 5] = ["gp-north", "gp-central", "gp-south", "gp-east", "gp-west"];
/// The partners holding the falls-and-housing dataset.
pub const FALLS_PARTNERS: [&str; 3] = ["acute-trust", "community-mh-trust", "council-asc"];

/// `n` residents from `seed`.
pub fn population(seed: u64, n: u32) -> Vec<Resident> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n).map(|id| resident(&mut rng, id)).collect()
}

fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn chance(rng: &mut ChaCha20Rng, p: f64) -> bool {
    unit(rng) < p.clamp(0.0, 1.0)
}

/// A small count with mean `mean` (Poisson by inversion), capped at `cap`.
fn count(rng: &mut ChaCha20Rng, mean: f64, cap: u32) -> u32 {
    let (mut k, mut p, mut cdf) = (0u32, (-mean).exp(), 0.0);
    let u = unit(rng);
    loop {
        cdf += p;
        if u < cdf || k >= cap {
            return k;
        }
        k += 1;
        p *= mean / f64::from(k);
    }
}

fn normal(rng: &mut ChaCha20Rng, mean: f64, sd: f64) -> f64 {
    let (u1, u2) = (unit(rng).max(1e-12), unit(rng));
    mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn resident(rng: &mut ChaCha20Rng, id: u32) -> Resident {
    // Ages: a young-skewed city with a long tail to 100.
    let age = if chance(rng, 0.3) {
        50 + (unit(rng) * 51.0) as u32
    } else {
        (unit(rng) * 80.0) as u32
    };
    let sex = if chance(rng, 0.51) { "female" } else { "male" };
    // Liverpool has many of England's most deprived neighbourhoods: skew towards decile 1.
    let decile = 1 + (unit(rng).powf(1.6) * 10.0) as u32;
    let gp = ((decile - 1) as usize * GP_FEDERATIONS.len() / 10 + (id as usize % 2))
        % GP_FEDERATIONS.len();
    let deprivation = f64::from(10 - decile) / 9.0; // 1 in the most deprived decile
    let years = f64::from(age.saturating_sub(18));
    let diabetes = age >= 18 && chance(rng, 0.01 + 0.0016 * years + 0.04 * deprivation);
    let hba1c = if diabetes {
        Some(normal(rng, 56.0 + 8.0 * deprivation, 11.0).clamp(30.0, 140.0))
    } else if age >= 18 && chance(rng, 0.35) {
        Some(normal(rng, 37.0, 3.5).clamp(25.0, 47.0))
    } else {
        None
    }
    .map(|h| (h * 10.0).round() / 10.0);
    let copd = age >= 35 && chance(rng, 0.004 + 0.0009 * years + 0.03 * deprivation);
    let older = f64::from(age.saturating_sub(50));
    let lives_alone = chance(rng, 0.12 + 0.006 * older);
    let property_type = match unit(rng) {
        u if u < 0.52 => "house",
        u if u < 0.52 + 0.08 + 0.004 * older => "bungalow",
        u if u < 0.85 => "flat",
        u if u < 0.95 => "maisonette",
        _ => "other",
    };
    let tenure = match unit(rng) + 0.25 * deprivation {
        u if u < 0.55 => "owner",
        u if u < 0.95 => "social_rent",
        u if u < 1.2 => "private_rent",
        _ => "other",
    };
    let rented = tenure != "owner";
    let damp_mould_reports = count(
        rng,
        0.1 + 0.5 * deprivation + if rented { 0.4 } else { 0.0 },
        4,
    );
    let respiratory_admissions = count(
        rng,
        0.01 + 0.05 * f64::from(damp_mould_reports) + if copd { 0.5 } else { 0.0 },
        5,
    );
    let home_adaptations = if age >= 60 {
        count(rng, 0.02 * older, 6)
    } else {
        0
    };
    let falls_mean = if age >= 60 {
        (0.01 + 0.004 * older) * if lives_alone { 1.6 } else { 1.0 }
            / (1.0 + 0.35 * f64::from(home_adaptations))
    } else {
        0.002
    };
    let falls_admissions = count(rng, falls_mean, 5);
    let care_package = age >= 50
        && chance(
            rng,
            0.01 + 0.004 * older + 0.05 * f64::from(falls_admissions),
        );
    Resident {
        id,
        age,
        sex,
        decile,
        gp,
        diabetes,
        hba1c,
        copd,
        lives_alone,
        home_adaptations,
        property_type,
        tenure,
        damp_mould_reports,
        respiratory_admissions,
        falls_admissions,
        care_package,
    }
}

/// Whether `partner` holds a row for `r`, and so which residents its extract has.
pub fn holds(partner: &str, r: &Resident) -> bool {
    // A stable per-resident, per-partner draw: the same resident is in the same extracts
    // however often they are generated.
    let draw = |salt: u32| {
        let mut x = u64::from(r.id) ^ (u64::from(salt) << 40) ^ 0x9e37_79b9_7f4a_7c15;
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        (x % 1000) as f64 / 1000.0
    };
    match partner {
        p if GP_FEDERATIONS.contains(&p) => r.age >= 18 && GP_FEDERATIONS[r.gp] == p,
        _ if r.age < 50 => false,
        "acute-trust" => r.falls_admissions + r.respiratory_admissions > 0 || draw(1) < 0.3,
        "community-mh-trust" => {
            r.copd || r.damp_mould_reports > 0 && draw(2) < 0.6 || draw(3) < 0.25
        }
        "council-asc" => r.care_package || r.home_adaptations > 0 || draw(4) < 0.2,
        _ => false,
    }
}

/// The CSV header of `partner`'s extract. GP federations hold the diabetes dataset; the
/// trusts and the council the falls one, with what they record of their own patients and
/// clients (housing conditions are the housing associations', in `write_linked_extract`). gp-north codes sex as F/M and
/// registers as Y/N, as a local system might; the others use the federated spellings.
pub fn header(partner: &str) -> &'static str {
    if GP_FEDERATIONS.contains(&partner) {
        "patient_id,age,sex,deprivation_decile,has_diabetes,hba1c,copd"
    } else {
        "person_id,age,decades_over_65,sex,deprivation_decile,falls_admissions,lives_alone,home_adaptations,respiratory_admissions,care_package"
    }
}

/// Writes `partner`'s extract of `people` to `path`; returns the rows written.
pub fn write_extract(partner: &str, people: &[Resident], path: &Path) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", header(partner))?;
    let local = partner == "gp-north";
    let yn = |b: bool| match (local, b) {
        (true, true) => "Y",
        (true, false) => "N",
        (false, b) => {
            if b {
                "true"
            } else {
                "false"
            }
        }
    };
    let mut rows = 0;
    for r in people.iter().filter(|r| holds(partner, r)) {
        rows += 1;
        if GP_FEDERATIONS.contains(&partner) {
            let sex = if local {
                &r.sex[..1].to_uppercase()
            } else {
                r.sex
            };
            let h = r.hba1c.map(|h| format!("{h:.1}")).unwrap_or_default();
            writeln!(
                out,
                "{},{},{sex},{},{},{h},{}",
                r.id,
                r.age,
                r.decile,
                yn(r.diabetes),
                yn(r.copd)
            )?;
        } else {
            writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                r.id,
                r.age,
                decades_over_65(r.age),
                r.sex,
                r.decile,
                r.falls_admissions,
                u32::from(r.lives_alone),
                r.home_adaptations,
                r.respiratory_admissions,
                yn(r.care_package)
            )?;
        }
    }
    out.flush()?;
    Ok(rows)
}

/// Whole decades of age past 65 (0 below 75), capped at 4.
pub fn decades_over_65(age: u32) -> u32 {
    (age.saturating_sub(65) / 10).min(4)
}

/// The partners of the linked housing-and-health dataset
/// (`examples/policies/housing-health.toml`), each holding only its own kind's columns.
pub const LINKED_PARTNERS: [&str; 9] = [
    "housing-north",
    "housing-south",
    "acute-trust",
    "gp-fed-1",
    "gp-fed-2",
    "gp-fed-3",
    "gp-fed-4",
    "gp-fed-5",
    "council-asc",
];

/// The resident's NHS number: ten digits with a valid modulus-11 check digit, in the
/// 999 range that the NHS never issues (so no synthetic number is a real person's). Distinct
/// for ids below 5·10⁶: of the two candidates 99·(2·id) and 99·(2·id + 1), which differ in
/// the ninth digit only, at most one has no valid check digit.
pub fn nhs_number(id: u32) -> String {
    (0..2)
        .map(|k| format!("99{:07}", 2 * u64::from(id) + k))
        .find_map(|nine| {
            civic_policies::linkage::nhs_check_digit(nine.as_bytes()).map(|d| format!("{nine}{d}"))
        })
        .expect("one of two neighbouring prefixes has a check digit")
}

/// A stable per-resident, per-partner draw in [0, 1).
fn draw(r: &Resident, salt: u32) -> f64 {
    let mut x = u64::from(r.id) ^ (u64::from(salt) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    (x % 1000) as f64 / 1000.0
}

/// Whether `partner` of the linked dataset holds `r`. Overlaps are partial, as in life:
/// social tenants of the north and south associations; the trust's patients (every resident
/// admitted, a share of the rest); the GP federation the resident is registered with (97%
/// of adults); the council's care and adaptation clients (a share of the rest over 50).
pub fn linked_holds(partner: &str, r: &Resident) -> bool {
    match partner {
        "housing-north" => r.tenure == "social_rent" && r.decile <= 4,
        "housing-south" => r.tenure == "social_rent" && r.decile > 4,
        "acute-trust" => r.falls_admissions + r.respiratory_admissions > 0 || draw(r, 11) < 0.3,
        "council-asc" => {
            r.age >= 50 && (r.care_package || r.home_adaptations > 0 || draw(r, 12) < 0.2)
        }
        p => {
            let federation = p
                .strip_prefix("gp-fed-")
                .and_then(|k| k.parse::<usize>().ok());
            r.age >= 18 && federation == Some(r.gp + 1) && draw(r, 13) < 0.97
        }
    }
}

/// The CSV header of a linked partner's extract.
pub fn linked_header(partner: &str) -> &'static str {
    match partner {
        "housing-north" | "housing-south" => {
            "tenant_nhs_number,property,tenure_code,damp_mould,adaptations_fitted"
        }
        "acute-trust" => "nhs_number,age_band,respiratory_admissions,falls_admissions",
        "council-asc" => "nhs_number,care_package",
        _ => "nhs_number,diabetes,hba1c",
    }
}

/// The age bands of the linked dataset.
pub fn age_band(age: u32) -> &'static str {
    match age {
        0..=17 => "under-18",
        18..=64 => "18-64",
        65..=74 => "65-74",
        75..=84 => "75-84",
        _ => "85+",
    }
}

/// Writes linked `partner`'s extract of `people` to `path`; returns the rows written. The
/// housing associations write NHS numbers with spaces (943 476 5919) and local tenure codes
/// (GN general needs, SO shared ownership), as a tenancy system might, in the layout
/// `examples/agent/housing-north.toml` maps; the others write ten digits and the federated
/// spellings.
pub fn write_linked_extract(
    partner: &str,
    people: &[Resident],
    path: &Path,
) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", linked_header(partner))?;
    let mut rows = 0;
    for r in people.iter().filter(|r| linked_holds(partner, r)) {
        rows += 1;
        let nhs = nhs_number(r.id);
        match partner {
            "housing-north" | "housing-south" => {
                // One tenancy in ten is shared ownership in the association's records.
                let tenure = if draw(r, 14) < 0.1 { "SO" } else { "GN" };
                writeln!(
                    out,
                    "{} {} {},{},{tenure},{},{}",
                    &nhs[..3],
                    &nhs[3..6],
                    &nhs[6..],
                    r.property_type,
                    if r.damp_mould_reports > 0 { "Y" } else { "N" },
                    r.home_adaptations
                )?;
            }
            "acute-trust" => writeln!(
                out,
                "{nhs},{},{},{}",
                age_band(r.age),
                r.respiratory_admissions,
                r.falls_admissions
            )?,
            "council-asc" => writeln!(out, "{nhs},{}", r.care_package)?,
            _ => {
                let hba1c = r
                    .hba1c
                    .map(|h| format!("{}", h.round() as u32))
                    .unwrap_or_default();
                writeln!(out, "{nhs},{},{hba1c}", r.diabetes)?;
            }
        }
    }
    out.flush()?;
    Ok(rows)
}

/// One synthetic antibiotic prescription in primary care, for a model of first-line
/// treatment failure (issue 19's antibiotic example; the training job itself is not built
/// yet). The invented model behind `failed` is [`FAILURE_MODEL`].
#[derive(Clone, Debug, PartialEq)]
pub struct Prescription {
    /// The GP federation (index into [`GP_FEDERATIONS`]).
    pub gp: usize,
    /// Age in years, 18 to 100.
    pub age: u32,
    /// "female" or "male".
    pub sex: &'static str,
    /// Renal function, eGFR in mL/min/1.73m², 10 to 120.
    pub egfr: f64,
    /// An antibiotic prescribed in the 90 days before.
    pub recent_antibiotic: bool,
    /// Lives in a care home.
    pub care_home: bool,
    /// The infection site: "urinary", "respiratory" or "skin".
    pub site: &'static str,
    /// The organism class the lab reported: "gram_negative", "gram_positive" or "other".
    pub organism: &'static str,
    /// The antibiotic given first.
    pub antibiotic: &'static str,
    /// The first-line treatment failed (a second antibiotic or an admission within 14 days).
    pub failed: bool,
}

/// The invented logistic model of first-line failure: (term, coefficient), the intercept
/// first. Recent antibiotics, care homes and a gram-negative organism treated with
/// amoxicillin raise it; nitrofurantoin fails more at low eGFR.
pub const FAILURE_MODEL: [(&str, f64); 7] = [
    ("intercept", -2.4),
    ("age per decade over 18", 0.12),
    ("recent antibiotic", 0.9),
    ("care home", 0.6),
    ("nitrofurantoin with eGFR below 45", 1.1),
    ("amoxicillin for a gram-negative organism", 1.3),
    ("female", -0.2),
];

/// `n` prescriptions from `seed`.
pub fn prescriptions(seed: u64, n: u32) -> Vec<Prescription> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xa57b_10c0);
    (0..n).map(|_| prescription(&mut rng)).collect()
}

fn prescription(rng: &mut ChaCha20Rng) -> Prescription {
    let age = 18 + (unit(rng).powf(0.8) * 82.0) as u32;
    let sex = if chance(rng, 0.6) { "female" } else { "male" };
    let decades = f64::from(age - 18) / 10.0;
    let egfr = normal(rng, 105.0 - 0.8 * f64::from(age - 18), 15.0).clamp(10.0, 120.0);
    let recent_antibiotic = chance(rng, 0.15 + 0.02 * decades);
    let care_home = age >= 65 && chance(rng, 0.08);
    let site = match unit(rng) {
        u if u < 0.5 + if sex == "female" { 0.15 } else { 0.0 } => "urinary",
        u if u < 0.85 => "respiratory",
        _ => "skin",
    };
    let organism = match (site, unit(rng)) {
        ("urinary", u) if u < 0.8 => "gram_negative",
        ("skin", u) if u < 0.75 => "gram_positive",
        ("respiratory", u) if u < 0.45 => "gram_positive",
        (_, u) if u < 0.9 => "other",
        _ => "gram_negative",
    };
    let antibiotic = match (site, unit(rng)) {
        ("urinary", u) if u < 0.55 => "nitrofurantoin",
        ("urinary", u) if u < 0.85 => "trimethoprim",
        ("urinary", _) => "amoxicillin",
        ("respiratory", u) if u < 0.6 => "amoxicillin",
        ("respiratory", _) => "doxycycline",
        (_, u) if u < 0.8 => "flucloxacillin",
        _ => "doxycycline",
    };
    let [
        _,
        (_, b_age),
        (_, b_recent),
        (_, b_care),
        (_, b_nitro),
        (_, b_amox),
        (_, b_female),
    ] = FAILURE_MODEL;
    let flag = |b: bool| f64::from(u8::from(b));
    let eta = FAILURE_MODEL[0].1
        + b_age * decades
        + b_recent * flag(recent_antibiotic)
        + b_care * flag(care_home)
        + b_nitro * flag(antibiotic == "nitrofurantoin" && egfr < 45.0)
        + b_amox * flag(antibiotic == "amoxicillin" && organism == "gram_negative")
        + b_female * flag(sex == "female");
    let failed = chance(rng, 1.0 / (1.0 + (-eta).exp()));
    Prescription {
        gp: (unit(rng) * GP_FEDERATIONS.len() as f64) as usize % GP_FEDERATIONS.len(),
        age,
        sex,
        egfr: (egfr * 10.0).round() / 10.0,
        recent_antibiotic,
        care_home,
        site,
        organism,
        antibiotic,
        failed,
    }
}

/// A prescription's terms in [`FAILURE_MODEL`]'s order, without the intercept: what a
/// model of failure is fitted on.
pub fn failure_terms(p: &Prescription) -> Vec<f64> {
    let flag = |b: bool| f64::from(u8::from(b));
    vec![
        f64::from(p.age - 18) / 10.0,
        flag(p.recent_antibiotic),
        flag(p.care_home),
        flag(p.antibiotic == "nitrofurantoin" && p.egfr < 45.0),
        flag(p.antibiotic == "amoxicillin" && p.organism == "gram_negative"),
        flag(p.sex == "female"),
    ]
}

/// One diabetic eye-screening photograph: a 32×32 grey (red-free) picture of the retina
/// with the optic disc, vessels and, in an eye with referable retinopathy, several small
/// lesion-like spots (dark microaneurysms and haemorrhages, bright exudates); an eye without
/// may show one or two.
#[derive(Clone, Debug, PartialEq)]
pub struct Photograph {
    /// Age in years, 18 to 100.
    pub age: u32,
    /// "female" or "male".
    pub sex: &'static str,
    /// The grader's outcome: referable retinopathy.
    pub referable: bool,
    /// Row-major grey levels.
    pub pixels: Vec<u8>,
}

/// The side of a screening photograph, in pixels.
pub const RETINA_SIDE: usize = 32;

/// `n` screening photographs from `seed` (each partner its own seed).
pub fn photographs(seed: u64, n: u32) -> Vec<Photograph> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x0e7e_5ca4);
    (0..n).map(|_| photograph(&mut rng)).collect()
}

fn photograph(rng: &mut ChaCha20Rng) -> Photograph {
    let age = 18 + (unit(rng).powf(0.7) * 82.0) as u32;
    let sex = if chance(rng, 0.45) { "female" } else { "male" };
    let referable = chance(rng, 0.12 + 0.003 * f64::from(age - 18));
    let side = RETINA_SIDE as f64;
    let centre = (side - 1.0) / 2.0;
    let mut image = vec![0.0f64; RETINA_SIDE * RETINA_SIDE];
    // The fundus: brighter at the centre, black outside the camera's circle.
    let brightness = normal(rng, 120.0, 10.0);
    let (disc_x, disc_y) = (
        centre + if chance(rng, 0.5) { 8.0 } else { -8.0 } + normal(rng, 0.0, 1.0),
        centre + normal(rng, 0.0, 1.5),
    );
    for y in 0..RETINA_SIDE {
        for x in 0..RETINA_SIDE {
            let (dx, dy) = ((x as f64 - centre) / centre, (y as f64 - centre) / centre);
            let r2 = dx * dx + dy * dy;
            if r2 > 1.0 {
                continue;
            }
            let disc = (x as f64 - disc_x).powi(2) + (y as f64 - disc_y).powi(2);
            image[y * RETINA_SIDE + x] =
                brightness * (1.0 - 0.45 * r2) + 70.0 * (-disc / 6.0).exp();
        }
    }
    // Vessels: dark arcs leaving the disc up and down.
    for arc in 0..4 {
        let (up, bend) = (
            if arc % 2 == 0 { -1.0 } else { 1.0 },
            normal(rng, 0.25, 0.08),
        );
        let toward = if disc_x > centre { -1.0 } else { 1.0 };
        for step in 0..40 {
            let t = f64::from(step) / 40.0;
            let x = disc_x + toward * t * 20.0;
            let y = disc_y
                + up * (t * 10.0 + bend * (t * 20.0).powi(2) / 4.0) * (0.5 + arc as f64 / 4.0);
            darken(&mut image, x, y, 22.0);
        }
    }
    // Lesion-like spots.
    let spots = if referable {
        4 + (unit(rng) * 7.0) as u32
    } else {
        u32::from(chance(rng, 0.3)) + u32::from(chance(rng, 0.1))
    };
    for _ in 0..spots {
        let (angle, radius) = (unit(rng) * std::f64::consts::TAU, unit(rng).sqrt() * 0.8);
        let (x, y) = (
            centre + radius * centre * angle.cos(),
            centre + radius * centre * angle.sin(),
        );
        let strength = if chance(rng, 0.6) { 45.0 } else { -55.0 };
        darken(&mut image, x, y, strength);
        for (ox, oy) in [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)] {
            darken(&mut image, x + ox, y + oy, strength * 0.4);
        }
    }
    let pixels = image
        .iter()
        .map(|v| {
            if *v == 0.0 {
                0
            } else {
                (v + normal(rng, 0.0, 5.0)).clamp(1.0, 255.0).round() as u8
            }
        })
        .collect();
    Photograph {
        age,
        sex,
        referable,
        pixels,
    }
}

/// Lowers the pixel nearest (x, y) by `amount` (raises it for a negative amount), if it is
/// inside the picture and the camera's circle.
fn darken(image: &mut [f64], x: f64, y: f64, amount: f64) {
    let (x, y) = (x.round(), y.round());
    if !(0.0..RETINA_SIDE as f64).contains(&x) || !(0.0..RETINA_SIDE as f64).contains(&y) {
        return;
    }
    let i = y as usize * RETINA_SIDE + x as usize;
    if image[i] > 0.0 {
        image[i] = (image[i] - amount).max(1.0);
    }
}

/// Writes a partner's screening extract: `path` (CSV: pid, age, sex, referable, and the
/// photograph's index) and the photographs beside it as a NumPy array of shape
/// (n, 32, 32), unsigned bytes (`path` with the extension `.npy`). Returns the photographs
/// written and the array's path.
pub fn write_retina(
    partner: usize,
    seed: u64,
    n: u32,
    path: &Path,
) -> std::io::Result<(usize, std::path::PathBuf)> {
    let photos = photographs(seed.wrapping_mul(31).wrapping_add(partner as u64), n);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "pid,age,sex,referable,image")?;
    for (i, p) in photos.iter().enumerate() {
        writeln!(
            out,
            "p{partner}-{i},{},{},{},{i}",
            p.age, p.sex, p.referable
        )?;
    }
    out.flush()?;
    let npy = path.with_extension("npy");
    let mut array = std::io::BufWriter::new(std::fs::File::create(&npy)?);
    array.write_all(&npy_header(&[photos.len(), RETINA_SIDE, RETINA_SIDE]))?;
    for p in &photos {
        array.write_all(&p.pixels)?;
    }
    array.flush()?;
    Ok((photos.len(), npy))
}

/// The header of a version 1.0 `.npy` file of unsigned bytes in C order: the magic string,
/// its length, and a dictionary padded with spaces to a multiple of 64 bytes.
fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut dict = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_population_is_deterministic_and_plausible() {
        let a = population(7, 20_000);
        assert_eq!(a, population(7, 20_000));
        assert_ne!(a, population(8, 20_000));
        let adults: Vec<&Resident> = a.iter().filter(|r| r.age >= 18).collect();
        let prevalence = adults.iter().filter(|r| r.diabetes).count() as f64 / adults.len() as f64;
        assert!(
            (0.04..0.15).contains(&prevalence),
            "diabetes prevalence {prevalence}"
        );
        // Deprivation raises prevalence.
        let rate = |lo: u32, hi: u32| {
            let group: Vec<_> = adults
                .iter()
                .filter(|r| (lo..=hi).contains(&r.decile))
                .collect();
            group.iter().filter(|r| r.diabetes).count() as f64 / group.len() as f64
        };
        assert!(rate(1, 3) > rate(8, 10));
        // Every adult is with exactly one GP federation; residents appear in several trusts.
        for r in &adults {
            assert_eq!(GP_FEDERATIONS.iter().filter(|p| holds(p, r)).count(), 1);
        }
        let multi = a
            .iter()
            .filter(|r| FALLS_PARTNERS.iter().filter(|p| holds(p, r)).count() > 1)
            .count();
        assert!(
            multi > 500,
            "{multi} residents in more than one trust or council extract"
        );
    }

    #[test]
    fn extracts_have_their_header_and_local_codes() {
        let dir = tempfile::tempdir().unwrap();
        let people = population(3, 2_000);
        let path = dir.path().join("gp-north.csv");
        let rows = write_extract("gp-north", &people, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count() as u64, rows + 1);
        assert!(text.starts_with(header("gp-north")));
        assert!(
            text.lines()
                .skip(1)
                .all(|l| l.contains(",F,") || l.contains(",M,"))
        );
        let rows = write_extract("council-asc", &people, &dir.path().join("c.csv")).unwrap();
        assert!(rows > 50);
    }

    #[test]
    fn linked_extracts_carry_valid_distinct_nhs_numbers_and_partial_overlaps() {
        let people = population(5, 20_000);
        let numbers: std::collections::HashSet<String> =
            people.iter().map(|r| nhs_number(r.id)).collect();
        assert_eq!(numbers.len(), people.len(), "distinct");
        let f = civic_policies::linkage::IdentifierFormat::NhsNumber;
        assert!(
            numbers
                .iter()
                .all(|n| n.starts_with("99") && f.normalise(n).as_deref() == Ok(n.as_str()))
        );
        let held = |p: &str| {
            people
                .iter()
                .filter(|r| linked_holds(p, r))
                .collect::<Vec<_>>()
        };
        let (north, trust) = (held("housing-north"), held("acute-trust"));
        let both = north
            .iter()
            .filter(|r| linked_holds("acute-trust", r))
            .count();
        assert!(
            both > 100 && both < north.len() && both < trust.len(),
            "{both} of {} and {}",
            north.len(),
            trust.len()
        );
        // No tenant is at both associations; an adult is at one federation at most.
        assert!(north.iter().all(|r| !linked_holds("housing-south", r)));
        for r in people.iter().filter(|r| r.age >= 18) {
            let feds = LINKED_PARTNERS
                .iter()
                .filter(|p| p.starts_with("gp-fed") && linked_holds(p, r))
                .count();
            assert!(feds <= 1);
        }
        let dir = tempfile::tempdir().unwrap();
        for partner in LINKED_PARTNERS {
            let path = dir.path().join(format!("{partner}.csv"));
            let rows = write_linked_extract(partner, &people, &path).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with(linked_header(partner)));
            assert_eq!(text.lines().count() as u64, rows + 1, "{partner}");
            assert!(rows > 50, "{partner}: {rows}");
        }
    }

    #[test]
    fn prescriptions_follow_their_failure_model() {
        use civic_mechanisms::learning::{FeatureBounds, LogisticPlan, ResidentBounds};
        let ps = prescriptions(2026, 40_000);
        assert_eq!(
            ps,
            prescriptions(2026, 40_000),
            "deterministic from the seed"
        );
        let failed = ps.iter().filter(|p| p.failed).count() as f64 / ps.len() as f64;
        assert!((0.1..0.35).contains(&failed), "failure rate {failed}");
        assert!(
            ps.iter()
                .all(|p| (10.0..=120.0).contains(&p.egfr) && p.age <= 100)
        );
        for gp in 0..GP_FEDERATIONS.len() {
            assert!(ps.iter().filter(|p| p.gp == gp).count() > 6_000, "{gp}");
        }
        // A logistic fit of the terms recovers the model (the sample is large; ±0.2).
        let bounds = [
            (0.0, 8.2),
            (0.0, 1.0),
            (0.0, 1.0),
            (0.0, 1.0),
            (0.0, 1.0),
            (0.0, 1.0),
        ]
        .map(|(lo, hi)| FeatureBounds { lo, hi })
        .to_vec();
        let one = ResidentBounds {
            rows_per_resident: 1,
            partners_per_person: 1,
            max_rows: 100_000,
        };
        let plan = LogisticPlan::new(bounds, 2, 24, 0.0, one).unwrap();
        let rows: Vec<(Vec<f64>, usize)> = ps
            .iter()
            .map(|p| (failure_terms(p), usize::from(p.failed)))
            .collect();
        let mut beta = vec![0.0; 7];
        for _ in 0..10 {
            let sum = plan.partner_sum(&beta, rows.iter().map(|(x, y)| (x.as_slice(), *y)));
            beta = plan.newton_step(&beta, &sum).unwrap();
        }
        for ((term, truth), fitted) in FAILURE_MODEL.iter().zip(plan.unscaled(&beta)) {
            assert!(
                (fitted - truth).abs() < 0.2,
                "{term}: {fitted} against {truth}"
            );
        }
    }
}

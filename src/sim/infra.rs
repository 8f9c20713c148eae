//! Network, device, email and payment identities. Shared values (popular SDK fingerprints,
//! big consumer mail domains, ISP prefixes) are shared on purpose: detectors must not be able
//! to separate families by the mere rarity of an attribute.

use super::rng::{base36, chance, hex, int, pick, pick_w, SimRng};
use super::words::{COMPANY_SUFFIX, COMPANY_WORDS, TLDS, UNIVERSITY_WORDS};
use compact_str::{format_compact, CompactString};
use rand::Rng;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NetKind {
    Residential,
    Mobile,
    Hosting,
}

pub struct Isp {
    pub asn: i64,
    pub country: &'static str,
    pub kind: NetKind,
    pub v4: &'static [(u8, u8)],
    pub v6: Option<&'static str>,
}

use NetKind::*;

pub const ISPS: &[Isp] = &[
    Isp {
        asn: 7922,
        country: "US",
        kind: Residential,
        v4: &[(73, 0), (98, 200), (24, 30)],
        v6: Some("2601"),
    },
    Isp {
        asn: 701,
        country: "US",
        kind: Residential,
        v4: &[(71, 160), (108, 28)],
        v6: Some("2600:4040"),
    },
    Isp {
        asn: 20115,
        country: "US",
        kind: Residential,
        v4: &[(75, 140), (47, 150)],
        v6: None,
    },
    Isp {
        asn: 3320,
        country: "DE",
        kind: Residential,
        v4: &[(79, 200), (93, 192)],
        v6: Some("2003:e5"),
    },
    Isp {
        asn: 2856,
        country: "GB",
        kind: Residential,
        v4: &[(81, 128), (86, 150)],
        v6: Some("2a00:23c7"),
    },
    Isp {
        asn: 5089,
        country: "GB",
        kind: Residential,
        v4: &[(82, 10), (86, 3)],
        v6: None,
    },
    Isp {
        asn: 12322,
        country: "FR",
        kind: Residential,
        v4: &[(82, 64), (88, 160)],
        v6: Some("2a01:e0a"),
    },
    Isp {
        asn: 4713,
        country: "JP",
        kind: Residential,
        v4: &[(153, 200), (114, 150)],
        v6: Some("240f:7a"),
    },
    Isp {
        asn: 4766,
        country: "KR",
        kind: Residential,
        v4: &[(121, 130), (211, 36)],
        v6: None,
    },
    Isp {
        asn: 6830,
        country: "NL",
        kind: Residential,
        v4: &[(84, 24), (62, 195)],
        v6: Some("2a02:a46"),
    },
    Isp {
        asn: 1221,
        country: "AU",
        kind: Residential,
        v4: &[(101, 160), (120, 144)],
        v6: None,
    },
    Isp {
        asn: 812,
        country: "CA",
        kind: Residential,
        v4: &[(99, 224), (174, 112)],
        v6: Some("2607:fea8"),
    },
    Isp {
        asn: 28573,
        country: "BR",
        kind: Residential,
        v4: &[(177, 32), (179, 100)],
        v6: Some("2804:14c"),
    },
    Isp {
        asn: 9829,
        country: "IN",
        kind: Residential,
        v4: &[(117, 200), (59, 88)],
        v6: None,
    },
    Isp {
        asn: 3352,
        country: "ES",
        kind: Residential,
        v4: &[(80, 58), (83, 32)],
        v6: None,
    },
    Isp {
        asn: 5617,
        country: "PL",
        kind: Residential,
        v4: &[(83, 20), (89, 64)],
        v6: None,
    },
    Isp {
        asn: 9121,
        country: "TR",
        kind: Residential,
        v4: &[(85, 96), (88, 230)],
        v6: None,
    },
    Isp {
        asn: 7552,
        country: "VN",
        kind: Residential,
        v4: &[(113, 160), (171, 224)],
        v6: None,
    },
    Isp {
        asn: 8151,
        country: "MX",
        kind: Residential,
        v4: &[(189, 128), (187, 160)],
        v6: None,
    },
    Isp {
        asn: 7713,
        country: "ID",
        kind: Residential,
        v4: &[(36, 64), (110, 136)],
        v6: None,
    },
    Isp {
        asn: 9299,
        country: "PH",
        kind: Residential,
        v4: &[(112, 198), (124, 104)],
        v6: None,
    },
    Isp {
        asn: 23969,
        country: "TH",
        kind: Residential,
        v4: &[(171, 96), (184, 22)],
        v6: None,
    },
    Isp {
        asn: 3269,
        country: "IT",
        kind: Residential,
        v4: &[(79, 16), (93, 32)],
        v6: None,
    },
    Isp {
        asn: 5713,
        country: "ZA",
        kind: Residential,
        v4: &[(105, 224), (41, 144)],
        v6: None,
    },
    Isp {
        asn: 7303,
        country: "AR",
        kind: Residential,
        v4: &[(181, 44), (190, 188)],
        v6: None,
    },
    Isp {
        asn: 8452,
        country: "EG",
        kind: Residential,
        v4: &[(156, 192), (197, 32)],
        v6: None,
    },
    Isp {
        asn: 15895,
        country: "UA",
        kind: Residential,
        v4: &[(46, 200), (178, 150)],
        v6: None,
    },
    Isp {
        asn: 8402,
        country: "RU",
        kind: Residential,
        v4: &[(95, 24), (176, 192)],
        v6: None,
    },
    Isp {
        asn: 6327,
        country: "CA",
        kind: Residential,
        v4: &[(68, 144), (70, 64)],
        v6: None,
    },
    Isp {
        asn: 22773,
        country: "US",
        kind: Residential,
        v4: &[(68, 0), (70, 160)],
        v6: None,
    },
    Isp {
        asn: 21928,
        country: "US",
        kind: Mobile,
        v4: &[(172, 56), (172, 58)],
        v6: Some("2607:fb90"),
    },
    Isp {
        asn: 20057,
        country: "US",
        kind: Mobile,
        v4: &[(166, 137), (107, 77)],
        v6: Some("2600:380"),
    },
    Isp {
        asn: 3209,
        country: "DE",
        kind: Mobile,
        v4: &[(109, 40), (176, 0)],
        v6: None,
    },
    Isp {
        asn: 55836,
        country: "IN",
        kind: Mobile,
        v4: &[(49, 36), (157, 32)],
        v6: Some("2409:40"),
    },
    Isp {
        asn: 17676,
        country: "JP",
        kind: Mobile,
        v4: &[(126, 0), (126, 200)],
        v6: None,
    },
    Isp {
        asn: 26599,
        country: "BR",
        kind: Mobile,
        v4: &[(191, 176), (179, 240)],
        v6: None,
    },
    Isp {
        asn: 16509,
        country: "US",
        kind: Hosting,
        v4: &[(3, 80), (54, 160), (18, 200)],
        v6: None,
    },
    Isp {
        asn: 396982,
        country: "US",
        kind: Hosting,
        v4: &[(34, 120), (35, 190)],
        v6: None,
    },
    Isp {
        asn: 14061,
        country: "US",
        kind: Hosting,
        v4: &[(167, 99), (159, 65)],
        v6: None,
    },
    Isp {
        asn: 16276,
        country: "FR",
        kind: Hosting,
        v4: &[(51, 75), (141, 94)],
        v6: None,
    },
    Isp {
        asn: 24940,
        country: "DE",
        kind: Hosting,
        v4: &[(65, 108), (88, 198)],
        v6: None,
    },
    Isp {
        asn: 63949,
        country: "US",
        kind: Hosting,
        v4: &[(172, 105), (45, 33)],
        v6: None,
    },
    Isp {
        asn: 20473,
        country: "US",
        kind: Hosting,
        v4: &[(45, 77), (149, 28)],
        v6: None,
    },
    Isp {
        asn: 8075,
        country: "US",
        kind: Hosting,
        v4: &[(20, 10), (52, 160)],
        v6: None,
    },
    Isp {
        asn: 45102,
        country: "SG",
        kind: Hosting,
        v4: &[(47, 74), (8, 219)],
        v6: None,
    },
    Isp {
        asn: 51167,
        country: "DE",
        kind: Hosting,
        v4: &[(161, 97), (173, 212)],
        v6: None,
    },
    Isp {
        asn: 60781,
        country: "NL",
        kind: Hosting,
        v4: &[(185, 107), (212, 32)],
        v6: None,
    },
    Isp {
        asn: 9009,
        country: "RO",
        kind: Hosting,
        v4: &[(185, 156), (89, 46)],
        v6: None,
    },
    Isp {
        asn: 212238,
        country: "GB",
        kind: Hosting,
        v4: &[(138, 199), (212, 102)],
        v6: None,
    },
];

#[derive(Clone, Debug)]
pub struct Net {
    pub ip: CompactString,
    pub asn: i64,
    pub country: CompactString,
}

/// Residential ISPs dominate consumer traffic; the weighting keeps US/EU heavy.
pub fn pick_isp(rng: &mut SimRng, kind: NetKind) -> &'static Isp {
    let cands: Vec<&Isp> = ISPS.iter().filter(|i| i.kind == kind).collect();
    cands[rng.gen_range(0..cands.len())]
}

pub fn net_in(rng: &mut SimRng, isp: &Isp, v6_share: f64) -> Net {
    let ip = match isp.v6 {
        Some(p) if chance(rng, v6_share) => format_compact!(
            "{p}::{:x}:{:x}:{:x}:{:x}",
            rng.gen_range(1..0xffffu32),
            rng.gen_range(1..0xffffu32),
            rng.gen_range(1..0xffffu32),
            rng.gen_range(1..0xffffu32)
        ),
        _ => {
            let (a, b) = pick(rng, isp.v4);
            format_compact!(
                "{a}.{}.{}.{}",
                b.wrapping_add(rng.gen_range(0..8)),
                rng.gen_range(0..=255u8),
                rng.gen_range(1..=254u8)
            )
        }
    };
    Net {
        ip,
        asn: isp.asn,
        country: CompactString::from(isp.country),
    }
}

pub fn random_net(rng: &mut SimRng, kind: NetKind) -> Net {
    let isp = pick_isp(rng, kind);
    net_in(rng, isp, if kind == Hosting { 0.0 } else { 0.12 })
}

/// A /24 block inside an ISP; proxy pools and campus networks are allocated this way.
pub fn block24(rng: &mut SimRng, isp: &Isp) -> (CompactString, i64, &'static str) {
    let (a, b) = pick(rng, isp.v4);
    (
        format_compact!(
            "{a}.{}.{}",
            b.wrapping_add(rng.gen_range(0..8)),
            rng.gen_range(0..=255u8)
        ),
        isp.asn,
        isp.country,
    )
}

pub fn in_block(rng: &mut SimRng, block: &(CompactString, i64, &'static str)) -> Net {
    Net {
        ip: format_compact!("{}.{}", block.0, rng.gen_range(1..=254u8)),
        asn: block.1,
        country: CompactString::from(block.2),
    }
}

/// A network owned by one organisation (university, company) with its own ASN.
pub fn org_block(rng: &mut SimRng, country: &'static str) -> (CompactString, i64, &'static str) {
    (
        format_compact!(
            "{}.{}.{}",
            int(rng, 128, 223),
            int(rng, 0, 255),
            int(rng, 0, 255)
        ),
        int(rng, 10_000, 64_000),
        country,
    )
}

#[derive(Clone, Debug)]
pub struct Device {
    pub fp: CompactString,
    pub ua: CompactString,
}

/// The handful of SDK TLS fingerprints most API users share (weights sum to 1).
const SDK: &[(&str, &str, f64)] = &[
    (
        "t13d1516h2_8daaf6152771_e5627efa2ab1",
        "frontier-sdk-python/0.{v}.{p} CPython/3.12",
        0.38,
    ),
    (
        "t13d1517h2_8daaf6152771_b0da82dd1658",
        "frontier-sdk-node/0.{v}.{p} node/v22",
        0.25,
    ),
    (
        "t13d1715h2_5b57614c22b0_3d5424432f57",
        "python-httpx/0.2{p}.{v}",
        0.15,
    ),
    (
        "t13d1812h1_85036bcba153_d41ae481755e",
        "Go-http-client/2.0",
        0.12,
    ),
    (
        "t13d4412h1_3b5074b1b5d0_6a3d5a2d9c1a",
        "curl/8.{p}.{v}",
        0.10,
    ),
];

const BROWSERS: &[(&str, &str, f64)] = &[
    ("t13d1516h2_8daaf6152771_02713d6af862", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/13{p}.0.0.0 Safari/537.36", 0.34),
    ("t13d1516h2_8daaf6152771_02713d6af862", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/13{p}.0.0.0 Safari/537.36", 0.14),
    ("t13d2014h2_a09f3c656075_14788d8d241b", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.{p} Safari/605.1.15", 0.12),
    ("t13d1715h2_5b57614c22b0_5c2c66f702b0", "Mozilla/5.0 (X11; Linux x86_64; rv:13{p}.0) Gecko/20100101 Firefox/13{p}.0", 0.08),
    ("t13d1516h2_8daaf6152771_b1ff8ab2d16f", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/13{p}.0.0.0 Safari/537.36 Edg/13{p}.0.0.0", 0.08),
    ("t13d2014h2_a09f3c656075_e42f34c56612", "FrontierChat/3.{v}.{p} (iPhone; iOS 18.{p})", 0.14),
    ("t13d1516h2_8daaf6152771_9b887d9acb53", "FrontierChat/3.{v}.{p} (Android 15; Pixel)", 0.10),
];

fn fill_ua(rng: &mut SimRng, t: &str) -> CompactString {
    let v = rng.gen_range(10..60).to_string();
    let p = rng.gen_range(0..9).to_string();
    CompactString::from(t.replace("{v}", &v).replace("{p}", &p))
}

pub fn sdk_device(rng: &mut SimRng) -> Device {
    let items: Vec<((&str, &str), f64)> = SDK.iter().map(|(f, u, w)| ((*f, *u), *w)).collect();
    let (fp, ua) = pick_w(rng, &items);
    Device {
        fp: CompactString::from(fp),
        ua: fill_ua(rng, ua),
    }
}

pub fn browser_device(rng: &mut SimRng) -> Device {
    let items: Vec<((&str, &str), f64)> = BROWSERS.iter().map(|(f, u, w)| ((*f, *u), *w)).collect();
    let (fp, ua) = pick_w(rng, &items);
    Device {
        fp: CompactString::from(fp),
        ua: fill_ua(rng, ua),
    }
}

pub fn random_ja4(rng: &mut SimRng) -> CompactString {
    format_compact!(
        "t13d{:02}{:02}{}_{}_{}",
        int(rng, 8, 45),
        int(rng, 8, 20),
        pick(rng, &["h2", "h1", "00"]),
        hex(rng, 12),
        hex(rng, 12)
    )
}

/// A rarely seen client: hand-rolled scripts, niche HTTP libraries. Benign developers have
/// these too, so rarity alone is not an attack signal. The user agent sometimes mimics a
/// popular SDK, as attackers do.
pub fn custom_device(rng: &mut SimRng) -> Device {
    let ua = match rng.gen_range(0..7) {
        0 => format_compact!("python-requests/2.3{}.{}", int(rng, 0, 2), int(rng, 0, 9)),
        1 => format_compact!("aiohttp/3.{}.{}", int(rng, 8, 10), int(rng, 0, 5)),
        2 => format_compact!("axios/1.{}.{}", int(rng, 5, 7), int(rng, 0, 9)),
        3 => CompactString::from("okhttp/4.12.0"),
        4 => format_compact!(
            "{}-client/{}.{}",
            pick(rng, COMPANY_WORDS),
            int(rng, 0, 3),
            int(rng, 0, 20)
        ),
        5 => sdk_device(rng).ua,
        _ => format_compact!("reqwest/0.12.{}", int(rng, 0, 9)),
    };
    Device {
        fp: random_ja4(rng),
        ua,
    }
}

/// Device for a typical API user: mostly a popular SDK.
pub fn api_device(rng: &mut SimRng) -> Device {
    if chance(rng, 0.8) {
        sdk_device(rng)
    } else {
        custom_device(rng)
    }
}

pub fn consumer_email(rng: &mut SimRng) -> CompactString {
    const D: &[(&str, f64)] = &[
        ("gmail.com", 45.0),
        ("outlook.com", 12.0),
        ("yahoo.com", 8.0),
        ("hotmail.com", 7.0),
        ("icloud.com", 7.0),
        ("proton.me", 3.0),
        ("live.com", 3.0),
        ("qq.com", 3.0),
        ("163.com", 2.0),
        ("gmx.de", 2.0),
        ("yandex.ru", 2.0),
        ("aol.com", 1.0),
        ("mail.ru", 1.0),
        ("web.de", 1.0),
        ("naver.com", 1.0),
    ];
    CompactString::from(pick_w(rng, D))
}

pub fn company_domain(rng: &mut SimRng) -> CompactString {
    format_compact!(
        "{}{}.{}",
        pick(rng, COMPANY_WORDS),
        pick(rng, COMPANY_SUFFIX),
        pick(rng, TLDS)
    )
}

pub fn university_domain(rng: &mut SimRng) -> CompactString {
    match rng.gen_range(0..3) {
        0 => format_compact!("{}.edu", pick(rng, UNIVERSITY_WORDS)),
        1 => format_compact!("{}-university.edu", pick(rng, UNIVERSITY_WORDS)),
        _ => format_compact!("{}.ac.uk", pick(rng, UNIVERSITY_WORDS)),
    }
}

/// Mostly consumer mail, some work and university addresses.
pub fn person_email(rng: &mut SimRng) -> CompactString {
    match rng.gen_range(0..100) {
        0..=77 => consumer_email(rng),
        78..=91 => company_domain(rng),
        _ => university_domain(rng),
    }
}

pub fn payment_fp(rng: &mut SimRng) -> CompactString {
    format_compact!("pm_{}", base36(rng, 14))
}

pub fn org_id(rng: &mut SimRng) -> CompactString {
    format_compact!("org_{}", base36(rng, 10))
}

pub fn account_id(rng: &mut SimRng) -> CompactString {
    format_compact!("acct_{}", base36(rng, 10))
}

/// An exit of a residential proxy network: any consumer ISP, fixed or mobile, in any country
/// the pool covers. A rotating proxy hands out a new one per request.
pub fn proxy_exit(rng: &mut SimRng) -> Net {
    let kind = if chance(rng, 0.8) {
        Residential
    } else {
        Mobile
    };
    random_net(rng, kind)
}

/// A fingerprint an attacker spoofs: a popular real browser's or SDK's, so that the device
/// alone cannot tell the account from the honest crowd that shares it.
pub fn spoofed_device(rng: &mut SimRng) -> Device {
    if chance(rng, 0.6) {
        browser_device(rng)
    } else {
        sdk_device(rng)
    }
}

/// A prepaid or virtual card: a fresh payment fingerprint, bought one per account.
pub fn prepaid_card(rng: &mut SimRng) -> CompactString {
    payment_fp(rng)
}

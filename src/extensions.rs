//! `Sec-WebSocket-Extensions`: the client's offers parsed (RFC 6455 §9.1)
//! and permessage-deflate negotiated from them (RFC 7692 §5–7).
//!
//! Negotiation is a pure function of the request's header values and the
//! server's settings, so every rule is checked by a table of offers and
//! answers without a server.
//!
//! The rules, in the order the RFC gives them:
//!
//! - The offers are walked in the client's order; the first acceptable
//!   `permessage-deflate` offer is accepted, and the response carries
//!   exactly one extension. An offer is declined (the next one is tried)
//!   when it has an unknown parameter, a parameter twice, or a bad value
//!   (§5.1, §7: "a server MUST decline").
//! - `server_no_context_takeover` (no value): the server resets its
//!   compressor after every message. Offered, the response repeats it; the
//!   server's own setting adds it too (§7.1.1.1).
//! - `client_no_context_takeover` (no value): the client resets its
//!   compressor after every message, so the server can drop its inflater
//!   between messages. Offered, the response repeats it; the server's own
//!   setting asks for it (§7.1.1.2).
//! - `server_max_window_bits` (8–15): the largest window the server may
//!   compress with. The response answers `min(offer, setting)`. zlib's
//!   smallest compressor window is 9 bits, but it never refers further
//!   back than the window less 262 bytes, so a 9-bit compressor reaches
//!   250 bytes back and its output is valid for a 256-byte (8-bit) window:
//!   an offer of 8 is answered with 8 and compressed with 9 bits (as Node's
//!   `ws` does). Without it in the offer the response
//!   does not name it (some clients refuse a value they did not ask
//!   about), and the server still compresses with its own setting: any
//!   window up to 15 is valid for the client (§7.1.2.1).
//! - `client_max_window_bits` (no value, or 8–15): the client may take a
//!   smaller window. With it in the offer, the response names the smaller
//!   of the offer's value and the server's setting, or nothing when both
//!   are 15; without it, the response must not name it, and the server
//!   inflates with a 32 KiB window (§7.1.2.2). A window of 8 is inflated
//!   with 9 bits (zlib's smallest), which decodes it too.

use http::HeaderValue;

/// The extension token of RFC 7692.
const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The server's permessage-deflate settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeflateConfig {
    /// The largest window the server compresses with, 8–15.
    pub(crate) server_max_window_bits: u8,
    /// The largest window the server lets the client compress with, 8–15.
    pub(crate) client_max_window_bits: u8,
    /// Reset the compressor after every message.
    pub(crate) server_no_context_takeover: bool,
    /// Ask the client to reset its compressor after every message.
    pub(crate) client_no_context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
        }
    }
}

/// What was agreed for one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The window the server compresses with (9–15; an agreed 8 is
    /// compressed with 9, which never refers back more than 250 bytes).
    pub(crate) server_window_bits: u8,
    /// The window the server inflates with (9–15).
    pub(crate) client_window_bits: u8,
    /// The server resets its compressor after every message.
    pub(crate) server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so the
    /// server's inflater need not outlive a message.
    pub(crate) client_no_context_takeover: bool,
}

/// One parameter of an offer, as sent.
#[derive(Debug, PartialEq, Eq)]
struct Param<'a> {
    name: &'a str,
    value: Option<String>,
}

/// One offered extension: its token and parameters.
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<Param<'a>>,
}

/// Accepts the first acceptable permessage-deflate offer among the
/// request's `Sec-WebSocket-Extensions` values: what was agreed, and the
/// response's one `Sec-WebSocket-Extensions` value. `None`: no offer (or
/// the header is malformed), so the socket runs uncompressed.
pub(crate) fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    config: &DeflateConfig,
) -> Option<(Negotiated, HeaderValue)> {
    for value in values {
        let Ok(text) = value.to_str() else {
            continue;
        };
        // A header that does not parse is declined whole: its offers
        // cannot be told apart reliably.
        let Some(offers) = parse(text) else {
            continue;
        };
        for offer in offers {
            if !offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
                continue;
            }
            if let Some(accepted) = accept(&offer, config) {
                return Some(accepted);
            }
        }
    }
    None
}

/// The answer to one permessage-deflate offer, or `None` to decline it.
fn accept(offer: &Offer<'_>, config: &DeflateConfig) -> Option<(Negotiated, HeaderValue)> {
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits: Option<u8> = None;
    // Outer `Some`: the parameter was offered; inner: with a value.
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for param in &offer.params {
        let name = param.name.to_ascii_lowercase();
        let value = param.value.as_deref();
        match name.as_str() {
            "server_no_context_takeover" => {
                if server_no_context_takeover || value.is_some() {
                    return None;
                }
                server_no_context_takeover = true;
            }
            "client_no_context_takeover" => {
                if client_no_context_takeover || value.is_some() {
                    return None;
                }
                client_no_context_takeover = true;
            }
            "server_max_window_bits" => {
                if server_max_window_bits.is_some() {
                    return None;
                }
                server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" => {
                if client_max_window_bits.is_some() {
                    return None;
                }
                client_max_window_bits = Some(match value {
                    None => None,
                    Some(value) => Some(window_bits(value)?),
                });
            }
            _ => return None,
        }
    }
    let server_window_bits = server_max_window_bits
        .unwrap_or(15)
        .min(config.server_max_window_bits);
    let client_bits_answer = match client_max_window_bits {
        None => None,
        Some(offered) => {
            let bits = offered.unwrap_or(15).min(config.client_max_window_bits);
            (bits < 15 || offered.is_some()).then_some(bits)
        }
    };
    let negotiated = Negotiated {
        server_window_bits: server_window_bits.max(9),
        client_window_bits: client_bits_answer.unwrap_or(15).max(9),
        server_no_context_takeover: server_no_context_takeover || config.server_no_context_takeover,
        client_no_context_takeover: client_no_context_takeover || config.client_no_context_takeover,
    };
    let mut response = String::from(PERMESSAGE_DEFLATE);
    if negotiated.server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    if negotiated.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    if server_max_window_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={server_window_bits}"));
    }
    if let Some(bits) = client_bits_answer {
        response.push_str(&format!("; client_max_window_bits={bits}"));
    }
    let header = HeaderValue::from_str(&response).ok()?;
    Some((negotiated, header))
}

/// A window size parameter's value: 8–15, as a token of decimal digits
/// without leading zeros (RFC 7692 §7.1.2: `1*DIGIT` in 8..15).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// Parses one header value: `1#extension`, where `extension = token *( ";"
/// param )` and `param = token [ "=" ( token | quoted-string ) ]` (RFC 6455
/// §9.1). A quoted value must itself be a token once unquoted. `None` for
/// anything that does not follow the grammar.
fn parse(text: &str) -> Option<Vec<Offer<'_>>> {
    let mut offers = Vec::new();
    let mut rest = text;
    loop {
        rest = skip_ows(rest);
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix(',') {
            // Empty list elements are allowed (RFC 7230 §7).
            rest = after;
            continue;
        }
        let (name, after) = take_token(rest)?;
        rest = skip_ows(after);
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let (param, after) = take_token(skip_ows(after))?;
            rest = skip_ows(after);
            let mut value = None;
            if let Some(after) = rest.strip_prefix('=') {
                let (parsed, after) = take_value(skip_ows(after))?;
                value = Some(parsed);
                rest = skip_ows(after);
            }
            params.push(Param { name: param, value });
        }
        offers.push(Offer { name, params });
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    (!offers.is_empty()).then_some(offers)
}

fn skip_ows(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

/// A `tchar` of RFC 7230 §3.2.6.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn take_token(text: &str) -> Option<(&str, &str)> {
    let end = text
        .bytes()
        .position(|b| !is_tchar(b))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// A token, or a quoted-string whose content is a token.
fn take_value(text: &str) -> Option<(String, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let (token, rest) = take_token(text)?;
        return Some((token.to_owned(), rest));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let all_tchar = !value.is_empty() && value.bytes().all(is_tchar);
                return all_tchar.then(|| (value, &quoted[i + 1..]));
            }
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(offers: &[&str], config: &DeflateConfig) -> Option<(Negotiated, String)> {
        let values: Vec<HeaderValue> = offers
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect();
        negotiate(&values, config).map(|(n, h)| (n, h.to_str().unwrap().to_owned()))
    }

    fn response(offers: &[&str], config: &DeflateConfig) -> Option<String> {
        answer(offers, config).map(|(_, header)| header)
    }

    /// Offer → response (or declined), with the default settings.
    #[test]
    fn negotiation_table_with_default_settings() {
        let config = DeflateConfig::default();
        let table: &[(&str, Option<&str>)] = &[
            // Chromium's and Firefox's offer.
            (
                "permessage-deflate; client_max_window_bits",
                Some("permessage-deflate"),
            ),
            ("permessage-deflate", Some("permessage-deflate")),
            ("PerMessage-Deflate", Some("permessage-deflate")),
            (
                "permessage-deflate; server_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ),
            // server_max_window_bits: answered with the offer's value.
            (
                "permessage-deflate; server_max_window_bits=9",
                Some("permessage-deflate; server_max_window_bits=9"),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                Some("permessage-deflate; server_max_window_bits=15"),
            ),
            (
                "permessage-deflate; server_max_window_bits=\"12\"",
                Some("permessage-deflate; server_max_window_bits=12"),
            ),
            // 8: answered with 8 (compressed with 9 bits, which stays
            // within 250 bytes).
            (
                "permessage-deflate; server_max_window_bits=8",
                Some("permessage-deflate; server_max_window_bits=8"),
            ),
            // client_max_window_bits with a value: echoed.
            (
                "permessage-deflate; client_max_window_bits=8",
                Some("permessage-deflate; client_max_window_bits=8"),
            ),
            (
                "permessage-deflate; client_max_window_bits=15",
                Some("permessage-deflate; client_max_window_bits=15"),
            ),
            // Bad values, a value where none is allowed, none where one is
            // required, duplicates and unknown parameters: declined.
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=7", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=010", None),
            ("permessage-deflate; server_max_window_bits=1x", None),
            ("permessage-deflate; client_max_window_bits=0", None),
            ("permessage-deflate; client_max_window_bits=\"\"", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            ("permessage-deflate; client_no_context_takeover=true", None),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                None,
            ),
            (
                "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
                None,
            ),
            (
                "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
                None,
            ),
            ("permessage-deflate; x-unknown", None),
            ("permessage-deflate; mux", None),
            // Other extensions are not ours.
            ("x-webkit-deflate-frame", None),
            ("permessage-bzip2", None),
            // Malformed headers are declined whole.
            ("permessage-deflate; ", None),
            ("permessage-deflate;; client_max_window_bits", None),
            ("permessage-deflate client_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=\"12", None),
            ("", None),
        ];
        for (offer, expected) in table {
            assert_eq!(
                response(&[offer], &config).as_deref(),
                *expected,
                "offer {offer:?}"
            );
        }
    }

    #[test]
    fn window_bits_are_answered_both_ways_for_every_size() {
        for offered in 8..=15u8 {
            for setting in 8..=15u8 {
                let config = DeflateConfig {
                    server_max_window_bits: setting,
                    ..DeflateConfig::default()
                };
                let offer = format!("permessage-deflate; server_max_window_bits={offered}");
                let (negotiated, header) = answer(&[&offer], &config).unwrap();
                let agreed = offered.min(setting);
                // 8 is compressed with 9 bits, which reach 250 bytes back.
                assert_eq!(negotiated.server_window_bits, agreed.max(9));
                assert_eq!(
                    header,
                    format!("permessage-deflate; server_max_window_bits={agreed}")
                );
            }
        }
        for offered in 8..=15u8 {
            for setting in 8..=15u8 {
                let config = DeflateConfig {
                    client_max_window_bits: setting,
                    ..DeflateConfig::default()
                };
                let offer = format!("permessage-deflate; client_max_window_bits={offered}");
                let (negotiated, header) = answer(&[&offer], &config).unwrap();
                let agreed = offered.min(setting);
                assert_eq!(negotiated.client_window_bits, agreed.max(9));
                assert_eq!(
                    header,
                    format!("permessage-deflate; client_max_window_bits={agreed}")
                );
            }
            // Offered without a value: the server's setting, or nothing at 15.
            let config = DeflateConfig {
                client_max_window_bits: offered,
                ..DeflateConfig::default()
            };
            let header = response(&["permessage-deflate; client_max_window_bits"], &config);
            let expected = if offered == 15 {
                "permessage-deflate".to_owned()
            } else {
                format!("permessage-deflate; client_max_window_bits={offered}")
            };
            assert_eq!(header.as_deref(), Some(expected.as_str()));
        }
    }

    #[test]
    fn settings_shape_the_answer() {
        let config = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
        };
        // Not offered: the client may use any window; the server compresses
        // with its own smaller one without naming it.
        let (negotiated, header) = answer(&["permessage-deflate"], &config).unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            negotiated,
            Negotiated {
                server_window_bits: 10,
                client_window_bits: 15,
                server_no_context_takeover: true,
                client_no_context_takeover: true,
            }
        );
        let (negotiated, header) = answer(
            &["permessage-deflate; client_max_window_bits; server_max_window_bits=12"],
            &config,
        )
        .unwrap();
        assert_eq!(
            header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=11"
        );
        assert_eq!(negotiated.client_window_bits, 11);
    }

    #[test]
    fn the_first_acceptable_offer_wins_across_lists_and_header_lines() {
        let config = DeflateConfig::default();
        // A declined offer is skipped for the next one.
        assert_eq!(
            response(
                &["permessage-deflate; server_max_window_bits=7, permessage-deflate; server_no_context_takeover"],
                &config
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(
            response(
                &[
                    "x-foo, permessage-deflate; bogus",
                    "permessage-deflate; client_max_window_bits=10",
                ],
                &config
            )
            .as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        // Whitespace and empty list elements are allowed.
        assert_eq!(
            response(
                &[" ,  permessage-deflate ;\tclient_no_context_takeover , "],
                &config
            )
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        assert!(response(&[], &config).is_none());
    }

    #[test]
    fn quoted_values_unescape_to_tokens() {
        assert_eq!(take_value("\"1\\5\"; x").unwrap(), ("15".to_owned(), "; x"));
        assert!(take_value("\"a b\"").is_none());
        assert!(take_value("\"\"").is_none());
        assert!(take_value("\"open").is_none());
        assert_eq!(window_bits("15"), Some(15));
        assert_eq!(window_bits("8"), Some(8));
        for bad in ["", "7", "16", "08", "+9", "9 ", "99"] {
            assert_eq!(window_bits(bad), None, "{bad:?}");
        }
    }
}

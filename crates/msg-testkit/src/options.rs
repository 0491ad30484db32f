//! Checks that a transport's documented options and its configuration
//! agree: every option its docs list parses from a URL and from a file,
//! and the configuration has no option the docs leave out.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde::de::DeserializeOwned;

/// The options a transport doc lists: the rows of the table under its
/// `## Options` heading, as `(name, example value)`. A row reads
/// ``| `name` | default | `example` | meaning |``.
pub fn documented_options(markdown: &str) -> Vec<(String, String)> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Options"))
        .expect("the doc has an `## Options` section");
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').to_owned();
            assert!(cells.len() >= 5, "an options row has four cells: {row}");
            (unquote(cells[1]), unquote(cells[3]))
        })
        .collect()
}

/// A documented example value as a file would hold it: a number, a
/// boolean, or text.
fn file_value(example: &str) -> serde_json::Value {
    if let Ok(n) = example.parse::<u64>() {
        n.into()
    } else if let Ok(b) = example.parse::<bool>() {
        b.into()
    } else {
        example.into()
    }
}

/// The fields `C` deserializes, read from serde's own error for an
/// unknown field (`expected one of ...`).
fn fields<C: DeserializeOwned>() -> BTreeSet<String> {
    let e = serde_json::from_str::<C>(r#"{ "no such option": 1 }"#)
        .err()
        .expect("an unknown option is refused");
    let text = e.to_string();
    let list = text
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("serde names no fields: {text}"));
    list.split(", ")
        .map(|f| f.split('`').nth(1).expect("a quoted field name").to_owned())
        .collect()
}

/// Checks configuration `C` against the options documented in
/// `markdown`: each parses in the query of `base_url` (alone and all
/// together) and from a file (with `url` where `C` has that field); and `C`
/// has exactly the documented options besides `url` and `other_fields` (which
/// the doc describes in prose, such as a map of client properties).
pub fn check_documented_options<C>(markdown: &str, base_url: &str, other_fields: &[&str])
where
    C: DeserializeOwned + FromStr,
    C::Err: std::fmt::Display,
{
    let options = documented_options(markdown);
    assert!(!options.is_empty(), "no options documented");
    let mut fields = fields::<C>();
    // A transport whose file names the server has a `url` field.
    let has_url = fields.remove("url");
    let query = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    for option in &options {
        let url = format!("{base_url}?{}", query(std::slice::from_ref(option)));
        if let Err(e) = C::from_str(&url) {
            panic!("the documented option {url} does not parse: {e}");
        }
        let mut file = serde_json::Map::new();
        if has_url {
            file.insert("url".into(), base_url.into());
        }
        file.insert(option.0.clone(), file_value(&option.1));
        if let Err(e) = serde_json::from_value::<C>(file.clone().into()) {
            panic!(
                "the documented option {} does not load from a file {}: {e}",
                option.0,
                serde_json::Value::from(file)
            );
        }
    }
    let all = format!("{base_url}?{}", query(&options));
    if let Err(e) = C::from_str(&all) {
        panic!("the documented options together do not parse ({all}): {e}");
    }
    let documented: BTreeSet<String> = options.iter().map(|(n, _)| n.clone()).collect();
    for other in other_fields {
        assert!(fields.remove(*other), "no field {other}");
    }
    assert_eq!(
        fields, documented,
        "the configuration's options (left) and the documented ones (right) differ"
    );
}

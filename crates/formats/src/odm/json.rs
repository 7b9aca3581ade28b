//! ODM XML as the JSON OpenClinica 3's REST API returns (json-lib's `XMLSerializer` shape), so
//! scripts written against `/rest/metadata/json/...` keep working.
//!
//! Rules: an element becomes an object; its attributes become keys prefixed `@` (with their
//! namespace prefix kept, `@OpenClinica:Version`); child elements become keys by their qualified
//! name; an element repeated under one parent becomes an array, a single one stays an object
//! (clients must handle both, as with OpenClinica); an element with only text becomes that
//! string, and text beside attributes or children is kept under `#text`. Namespace declarations
//! (`xmlns`, `xmlns:*`) are attributes like the others, as json-lib emits them.

use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Converts an XML document into OpenClinica-style JSON.
///
/// # Errors
/// When the XML is malformed or declares a DTD.
pub fn xml_to_json(xml: &[u8]) -> Result<Value, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    // (name, attributes/children, text)
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("XML error at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::DocType(_) => return Err("a DTD is not allowed".to_owned()),
            Event::Start(ref e) | Event::Empty(ref e) if root.is_none() => {
                let name = e.name().as_ref().to_owned();
                let mut map = Map::new();
                for a in e.attributes().with_checks(false) {
                    let a = a.map_err(|x| x.to_string())?;
                    let key = format!("@{}", a.key.as_ref());
                    let value =
                        a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|x| x.to_string())?.into_owned();
                    map.insert(key, Value::String(value));
                }
                stack.push((name, map, String::new()));
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root);
                }
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let name = r.into_inner().into_owned();
                    let ch = match name.as_str() {
                        "amp" => "&".to_owned(),
                        "lt" => "<".to_owned(),
                        "gt" => ">".to_owned(),
                        "quot" => "\"".to_owned(),
                        "apos" => "'".to_owned(),
                        n => n
                            .strip_prefix("#x")
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                            .and_then(char::from_u32)
                            .map(String::from)
                            .ok_or_else(|| format!("unknown entity &{n};"))?,
                    };
                    top.2.push_str(&ch);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2.push_str(&t.into_inner());
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match root {
        Some((name, value)) => {
            let mut m = Map::new();
            m.insert(name, value);
            Ok(Value::Object(m))
        }
        None => Err("the document has no root element".to_owned()),
    }
}

fn close(stack: &mut Vec<(String, Map<String, Value>, String)>, root: &mut Option<(String, Value)>) {
    let Some((name, mut map, text)) = stack.pop() else { return };
    let text = text.trim().to_owned();
    let value = if map.is_empty() {
        Value::String(text)
    } else {
        if !text.is_empty() {
            map.insert("#text".to_owned(), Value::String(text));
        }
        Value::Object(map)
    };
    match stack.last_mut() {
        Some((_, parent, _)) => match parent.get_mut(&name) {
            Some(Value::Array(list)) => list.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None => {
                parent.insert(name, value);
            }
        },
        None => *root = Some((name, value)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn json_follows_openclinica_shape() {
        let xml = br#"<ODM xmlns:OpenClinica="x" FileOID="F1"><Study OID="S_A"><Name>A &amp; B</Name>
            <E OID="1"/><E OID="2"/><One OID="3"/><T Lang="en">hi</T></Study></ODM>"#;
        let v = xml_to_json(xml).unwrap();
        assert_eq!(v["ODM"]["@FileOID"], "F1");
        assert_eq!(v["ODM"]["@xmlns:OpenClinica"], "x");
        assert_eq!(v["ODM"]["Study"]["Name"], "A & B");
        assert_eq!(v["ODM"]["Study"]["E"].as_array().unwrap().len(), 2);
        assert_eq!(v["ODM"]["Study"]["One"]["@OID"], "3");
        assert_eq!(v["ODM"]["Study"]["T"]["#text"], "hi");
        assert!(xml_to_json(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>").is_err());
    }
}

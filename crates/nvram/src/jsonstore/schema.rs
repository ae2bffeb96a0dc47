//! Reading the file the way QEMU 10.0's QAPI input visitor does: every member kept in order,
//! duplicates, unknown members and wrong types refused with the parameter path QEMU names.

use super::*;

/// A JSON value that keeps every member of an object, in order, and refuses a member given
/// twice (QEMU's parser fails on it), and tells integers from other numbers as QEMU does.
pub(super) enum Node {
    Null,
    Bool,
    Int(i128),
    Float,
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float => "a number with a fraction or exponent",
            Node::Str(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Float)
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(Node::Array(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out: Vec<(String, Node)> = Vec::new();
                while let Some(key) = a.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!(
                            "member {:?} given twice",
                            bounded(&key)
                        )));
                    }
                    let value = a.next_value()?;
                    out.push((key, value));
                }
                Ok(Node::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One variable's members as read (strings and the attribute number).
pub(super) struct RawVariable {
    name: String,
    guid: String,
    attr: i128,
    data: String,
    time: Option<String>,
    digest: Option<String>,
}

/// Checks what QEMU's QAPI input checks (`UefiVarStore`, `UefiVariable`).
pub(super) fn read_schema(node: Node) -> Result<(i64, Vec<RawVariable>), JsonStoreError> {
    let schema = |path: String, problem: String| JsonStoreError::Schema { path, problem };
    let members = |node: Node, path: &str, allowed: &[&str]| {
        let Node::Object(members) = node else {
            return Err(schema(
                if path.is_empty() {
                    "<anonymous>".into()
                } else {
                    path.into()
                },
                format!("{} instead of an object", node.kind()),
            ));
        };
        let mut map: HashMap<String, Node> = HashMap::new();
        for (key, value) in members {
            if !allowed.contains(&key.as_str()) {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                return Err(schema(
                    bounded(&p).into_owned(),
                    format!("unexpected member {:?}", bounded(&key)),
                ));
            }
            map.insert(key, value);
        }
        Ok(map)
    };
    let mut top = members(node, "", &["version", "variables"])?;
    let version = match top.remove("version") {
        None => return Err(schema("version".into(), "version is missing".into())),
        Some(Node::Int(v)) => i64::try_from(v)
            .map_err(|_| schema("version".into(), "version is out of range".into()))?,
        Some(other) => {
            return Err(schema(
                "version".into(),
                format!("version is {} instead of an integer", other.kind()),
            ))
        }
    };
    let list = match top.remove("variables") {
        None => return Err(schema("variables".into(), "variables is missing".into())),
        Some(Node::Array(list)) => list,
        Some(other) => {
            return Err(schema(
                "variables".into(),
                format!("variables is {} instead of an array", other.kind()),
            ))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, node) in list.into_iter().enumerate() {
        let path = format!("variables[{i}]");
        let mut m = members(
            node,
            &path,
            &["name", "guid", "attr", "data", "time", "digest"],
        )?;
        let mut string = |key: &str, required: bool| match m.remove(key) {
            None if required => Err(schema(
                format!("{path}.{key}"),
                format!("{path}.{key} is missing"),
            )),
            None => Ok(None),
            Some(Node::Str(s)) => Ok(Some(s)),
            Some(other) => Err(schema(
                format!("{path}.{key}"),
                format!("{path}.{key} is {} instead of a string", other.kind()),
            )),
        };
        let guid = string("guid", true)?.unwrap_or_default();
        let name = string("name", true)?.unwrap_or_default();
        let data = string("data", true)?.unwrap_or_default();
        let time = string("time", false)?;
        let digest = string("digest", false)?;
        let attr = match m.remove("attr") {
            None => {
                return Err(schema(
                    format!("{path}.attr"),
                    format!("{path}.attr is missing"),
                ))
            }
            Some(Node::Int(a)) => a,
            Some(other) => {
                return Err(schema(
                    format!("{path}.attr"),
                    format!("{path}.attr is {} instead of an integer", other.kind()),
                ))
            }
        };
        out.push(RawVariable {
            name,
            guid,
            attr,
            data,
            time,
            digest,
        });
    }
    Ok((version, out))
}

/// Decodes one variable, refusing what QEMU would read wrongly or never writes.
pub(super) fn decode(
    index: usize,
    v: RawVariable,
    notes: &mut Vec<String>,
) -> Result<Entry, JsonStoreError> {
    let field = |field: &'static str, problem: String| JsonStoreError::Field {
        index,
        name: v.name.clone(),
        field,
        problem,
    };
    if v.name.is_empty() {
        return Err(field("name", "empty: not a variable".into()));
    }
    if let Some(c) = v.name.chars().find(|c| !c.is_ascii() || *c == '\0') {
        return Err(field(
            "name",
            if c == '\0' {
                "contains a NUL character (QEMU would cut the name there)".into()
            } else {
                format!("{c:?} is not ASCII: QEMU reads a name byte by byte, so it would hold another name and write `?` for each byte")
            },
        ));
    }
    let guid = Guid::try_parse(&v.guid)
        .map_err(|_| field("guid", format!("{:?} is not a GUID", bounded(&v.guid))))?;
    let attr = u32::try_from(v.attr).map_err(|_| {
        field(
            "attr",
            format!("{} is not a 32-bit attribute value", v.attr),
        )
    })?;
    const KNOWN: u32 = 0x7F;
    if attr & !KNOWN != 0 {
        return Err(field("attr", format!("0x{attr:X} has unknown bits")));
    }
    if attr & Attributes::AUTHENTICATED_WRITE_ACCESS != 0 {
        return Err(field(
            "attr",
            format!("0x{attr:X} has aw (count-based authentication), which QEMU refuses to create"),
        ));
    }
    if attr & Attributes::APPEND_WRITE != 0 {
        return Err(field(
            "attr",
            format!("0x{attr:X} has append, an operation that QEMU never stores"),
        ));
    }
    let hex_field = |name: &'static str, text: &str| {
        if text.len() % 2 != 0 {
            return Err(field(
                name,
                format!(
                    "{} hex digits: an odd number (QEMU would write past its buffer)",
                    text.len()
                ),
            ));
        }
        hex::decode(text).map_err(|e| field(name, format!("not hex ({e}): QEMU would read zeros")))
    };
    let data = hex_field("data", &v.data)?;
    let at = attr & Attributes::TIME_BASED_AUTHENTICATED_WRITE_ACCESS != 0;
    let time = match &v.time {
        None => None,
        Some(t) => {
            let bytes: [u8; 16] = hex_field("time", t)?.try_into().map_err(|_| {
                field(
                    "time",
                    format!(
                        "{} hex digits instead of 32 (QEMU would ignore it)",
                        t.len()
                    ),
                )
            })?;
            if !at && bytes != [0; 16] {
                notes.push(format!(
                    "variable {index} ({}): time ignored: only at variables keep one (QEMU does not write it back)",
                    bounded(&v.name)
                ));
            }
            at.then_some(EfiTime(bytes))
        }
    };
    let digest = match &v.digest {
        None => None,
        Some(d) => {
            hex_field("digest", d)?;
            if !at && !d.is_empty() {
                notes.push(format!(
                    "variable {index} ({}): digest ignored: only at variables keep one (QEMU does not write it back)",
                    bounded(&v.name)
                ));
            }
            (at && !d.is_empty()).then(|| d.to_ascii_lowercase())
        }
    };
    Ok(Entry {
        name: v.name,
        guid,
        attr,
        data,
        time,
        digest,
    })
}

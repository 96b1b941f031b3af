//! Fields of a buildx-style flag value (`type=oci,dest=out.tar`), read as
//! one CSV record, as buildx reads `-o`, `--cache-from`, `--cache-to` and
//! `--secret` with Go's `encoding/csv`: commas separate fields, a field in
//! double quotes may hold commas (`"dest=a,b"`), and `""` inside quotes is
//! one quote.

/// What is wrong with a spec's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecFieldsError {
    #[error("it is not one comma-separated record: {reason}")]
    Csv { reason: String },
    #[error("it spans several lines: write it on one")]
    Lines,
    #[error(
        "a quote is not closed: quote a whole field, `\"key=a,b\"`, and double a quote inside it"
    )]
    Quote,
    #[error("`{field}` is not KEY=VALUE")]
    NotKeyValue { field: String },
}

/// The spec's fields, unquoted.
pub fn fields(spec: &str) -> Result<Vec<String>, SpecFieldsError> {
    // the csv crate reads an unclosed quote to the end; Go's reader (and
    // so buildx) refuses it. In a valid record every quote is paired.
    if spec.matches('"').count() % 2 == 1 {
        return Err(SpecFieldsError::Quote);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(spec.as_bytes());
    let mut records = reader.records();
    let first = match records.next() {
        None => return Ok(Vec::new()),
        Some(r) => r.map_err(|e| SpecFieldsError::Csv {
            reason: e.to_string(),
        })?,
    };
    if records.next().is_some() {
        return Err(SpecFieldsError::Lines);
    }
    Ok(first.iter().map(str::to_owned).collect())
}

/// The spec's `KEY=VALUE` fields, split at each field's first `=`, in order
/// (duplicates kept: the caller decides what they mean).
pub fn key_values(spec: &str) -> Result<Vec<(String, String)>, SpecFieldsError> {
    fields(spec)?
        .into_iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => Err(SpecFieldsError::NotKeyValue { field: f }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_as_go_encoding_csv_reads_them() {
        let ok = |s: &str| fields(s).unwrap();
        assert_eq!(ok("type=oci,dest=a.tar"), ["type=oci", "dest=a.tar"]);
        assert_eq!(ok("type=local,\"dest=a,b\""), ["type=local", "dest=a,b"]);
        assert_eq!(
            ok("id=x,\"src=say \"\"hi\"\"\""),
            ["id=x", "src=say \"hi\""]
        );
        assert_eq!(ok("a=1,,b=2"), ["a=1", "", "b=2"]);
        assert_eq!(ok(" a = 1"), [" a = 1"]);
        assert!(ok("").is_empty());
        assert_eq!(fields("a=1\nb=2"), Err(SpecFieldsError::Lines));
        assert_eq!(fields("type=local,\"dest=a"), Err(SpecFieldsError::Quote));
    }

    #[test]
    fn key_values_split_at_the_first_equals() {
        assert_eq!(
            key_values("type=registry,ref=r:1,\"x=a=b,c\"").unwrap(),
            [
                ("type".into(), "registry".into()),
                ("ref".into(), "r:1".into()),
                ("x".into(), "a=b,c".into())
            ]
        );
        assert_eq!(
            key_values("type=oci,dest"),
            Err(SpecFieldsError::NotKeyValue {
                field: "dest".into()
            })
        );
    }
}

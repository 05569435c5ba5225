//! Stage 2c': API versions. Several `[[apis]]` documents run side by side
//! under their own base paths (`/api/v1`, `/api/v2`); with `[versioning]
//! path`, clients may instead call the unversioned prefix and name the
//! version in a header (`Api-Version: 2`): the request is then routed,
//! checked and sent upstream as the versioned path, so every later stage
//! sees one canonical path. Retired versions answer 410 with a link to their
//! successor, by path or by header.

use std::sync::Arc;

use http::HeaderName;

use crate::config::file::Versioning;
use crate::reject::Rejection;

/// A retired version.
#[derive(Debug)]
struct Retired {
    base_path: String,
    version: Option<String>,
    successor: Option<Arc<str>>,
}

/// Compiled `[versioning]`.
#[derive(Debug)]
pub struct Versions {
    header: HeaderName,
    path: Option<String>,
    default: Option<String>,
    /// `(version, base path)` of each versioned `[[apis]]` entry.
    apis: Vec<(String, String)>,
    retired: Vec<Retired>,
}

/// `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Versions {
    /// Compiles `[versioning]` with the `(version, base_path)` of the APIs.
    /// Errors are `(field, message)`.
    pub fn compile(
        v: &Versioning,
        apis: Vec<(String, String)>,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        let header = HeaderName::from_bytes(v.header.to_ascii_lowercase().as_bytes())
            .unwrap_or_else(|_| {
                errors.push(("versioning.header".into(), "not a header name".into()));
                HeaderName::from_static("api-version")
            });
        let path = v.path.as_ref().map(|p| p.trim_end_matches('/').to_owned());
        if path.as_ref().is_some_and(|p| !p.starts_with('/')) {
            errors.push((
                "versioning.path".into(),
                "must start with / and not be /".into(),
            ));
        }
        if let Some(p) = &path {
            if apis.iter().any(|(_, b)| under(p, b)) {
                errors.push((
                    "versioning.path".into(),
                    "is inside an API's base path: the header would never apply".into(),
                ));
            }
        }
        // The longest base path wins (`/api/v2` before `/api`).
        let mut apis = apis;
        apis.sort_by_key(|(_, b)| std::cmp::Reverse(b.len()));
        for (i, (ver, _)) in apis.iter().enumerate() {
            if apis.iter().skip(i + 1).any(|(o, _)| o == ver) {
                errors.push(("apis".into(), format!("two APIs have version {ver:?}")));
            }
        }
        let mut retired = Vec::new();
        for (i, r) in v.retired.iter().enumerate() {
            let base = r.base_path.trim_end_matches('/').to_owned();
            if !base.starts_with('/') {
                errors.push((
                    format!("versioning.retired[{i}].base_path"),
                    "must start with / and not be /".into(),
                ));
            }
            if apis.iter().any(|(_, b)| under(b, &base) || under(&base, b)) {
                errors.push((
                    format!("versioning.retired[{i}].base_path"),
                    "overlaps the base path of an API in service".into(),
                ));
            }
            if r.version
                .as_ref()
                .is_some_and(|x| apis.iter().any(|(a, _)| a == x))
            {
                errors.push((
                    format!("versioning.retired[{i}].version"),
                    "is also the version of an API in service".into(),
                ));
            }
            retired.push(Retired {
                base_path: base,
                version: r.version.clone(),
                successor: r.successor.as_deref().map(Arc::from),
            });
        }
        if let Some(d) = &v.default {
            if !apis.iter().any(|(a, _)| a == d) {
                errors.push((
                    "versioning.default".into(),
                    format!("no [[apis]] entry has version {d:?}"),
                ));
            }
        }
        Self {
            header,
            path,
            default: v.default.clone(),
            apis,
            retired,
        }
    }

    /// Whether a header prefix is configured without versioned APIs.
    pub fn header_unused(&self) -> bool {
        self.path.is_some() && self.apis.is_empty()
    }

    /// The path to route instead, when the version comes from the header;
    /// 410 for a retired version, 400 for an unknown or missing one.
    /// `preflight`: a CORS preflight (it cannot carry the header; without a
    /// default it asks about the first version).
    pub fn resolve(
        &self,
        path: &str,
        h: &http::HeaderMap,
        preflight: bool,
    ) -> Result<Option<String>, Rejection> {
        if let Some(r) = self.retired.iter().find(|r| under(path, &r.base_path)) {
            return Err(Rejection::Gone {
                successor: r.successor.clone(),
            });
        }
        let mut values = h.get_all(&self.header).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Rejection::BadRequest(
                "the API version header is given twice",
            ));
        }
        let asked = match first {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Rejection::BadRequest("invalid API version header"))?
                    .trim(),
            ),
            None => None,
        };
        if let Some((ver, _)) = self.apis.iter().find(|(_, b)| under(path, b)) {
            return match asked {
                Some(a) if a != ver => Err(Rejection::BadRequest(
                    "the API version header and the path name different versions",
                )),
                _ => Ok(None),
            };
        }
        let Some(prefix) = self.path.as_deref().filter(|p| under(path, p)) else {
            return Ok(None);
        };
        let fallback = self.default.as_deref().or_else(|| {
            self.apis
                .first()
                .map(|(v, _)| v.as_str())
                .filter(|_| preflight)
        });
        let Some(version) = asked.or(fallback) else {
            return Err(Rejection::BadRequest(
                "this path needs the API version header",
            ));
        };
        if let Some(r) = self
            .retired
            .iter()
            .find(|r| r.version.as_deref() == Some(version))
        {
            return Err(Rejection::Gone {
                successor: r.successor.clone(),
            });
        }
        let (_, base) = self
            .apis
            .iter()
            .find(|(v, _)| v == version)
            .ok_or(Rejection::BadRequest("unknown API version"))?;
        let rest = path.get(prefix.len()..).unwrap_or("");
        Ok(Some(format!("{base}{rest}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflights_without_the_header_ask_about_a_version() {
        let cfg = Versioning {
            header: "api-version".into(),
            path: Some("/api".into()),
            default: None,
            retired: Vec::new(),
        };
        let v = Versions::compile(&cfg, vec![("1".into(), "/api/v1".into())], &mut Vec::new());
        let none = http::HeaderMap::new();
        assert!(v.resolve("/api/x", &none, false).is_err());
        assert_eq!(
            v.resolve("/api/x", &none, true).ok(),
            Some(Some("/api/v1/x".into()))
        );
        let mut twice = http::HeaderMap::new();
        twice.append("api-version", "1".parse().unwrap());
        twice.append("api-version", "2".parse().unwrap());
        assert!(v.resolve("/api/x", &twice, false).is_err());
        // a prefix inside an API's base path is refused at load
        let mut errors = Vec::new();
        let bad = Versioning {
            path: Some("/api/v1/x".into()),
            ..cfg
        };
        Versions::compile(&bad, vec![("1".into(), "/api/v1".into())], &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    impl Versions {
        fn resolve_t(&self, p: &str, h: &http::HeaderMap) -> Result<Option<String>, Rejection> {
            self.resolve(p, h, false)
        }
    }

    #[test]
    fn header_versions_rewrite_and_retired_ones_are_gone() {
        let cfg = Versioning {
            header: "Api-Version".into(),
            path: Some("/api".into()),
            default: Some("1".into()),
            retired: vec![crate::config::file::RetiredVersion {
                base_path: "/api/v0".into(),
                version: Some("0".into()),
                successor: Some("/api/v1".into()),
            }],
        };
        let mut errors = Vec::new();
        let v = Versions::compile(
            &cfg,
            vec![
                ("1".into(), "/api/v1".into()),
                ("2".into(), "/api/v2".into()),
            ],
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let h = |ver: Option<&str>| {
            let mut m = http::HeaderMap::new();
            if let Some(x) = ver {
                m.insert("api-version", x.parse().unwrap());
            }
            m
        };
        assert_eq!(
            v.resolve_t("/api/users/1", &h(Some("2"))).ok(),
            Some(Some("/api/v2/users/1".into()))
        );
        assert_eq!(
            v.resolve_t("/api/users/1", &h(None)).ok(),
            Some(Some("/api/v1/users/1".into()))
        );
        assert_eq!(v.resolve_t("/api/v2/users/1", &h(None)).ok(), Some(None));
        assert_eq!(v.resolve_t("/health", &h(Some("2"))).ok(), Some(None));
        assert_eq!(v.resolve_t("/apix", &h(None)).ok(), Some(None));
        assert!(matches!(
            v.resolve_t("/api/v0/users", &h(None)),
            Err(Rejection::Gone { .. })
        ));
        assert!(matches!(
            v.resolve_t("/api/users", &h(Some("0"))),
            Err(Rejection::Gone { .. })
        ));
        assert!(matches!(
            v.resolve_t("/api/users", &h(Some("9"))),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            v.resolve_t("/api/v1/users", &h(Some("2"))),
            Err(Rejection::BadRequest(_))
        ));
    }
}

//! The route templates a request log record names: the API's own paths as its OpenAPI document
//! lists them (`/api/v1/jobs/{id}/cancel`), matched segment by segment against the path a call
//! asked for. A path no route serves is recorded as `unmatched`, so whatever a caller puts in a
//! path (a scanner's guesses, say) stays in the record's `path`, which retention prunes, and
//! never becomes a route of its own in the usage counts, which are kept.

use std::collections::HashMap;

/// The route recorded for a path that no template matches.
pub const UNMATCHED: &str = "unmatched";

/// The keys of an OpenAPI path item that are operations.
const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One segment of a template: a fixed word, or a parameter that matches any segment.
#[derive(Debug)]
enum Segment {
    Fixed(String),
    Parameter,
}

#[derive(Debug)]
struct Template {
    route: String,
    segments: Vec<Segment>,
    /// The methods the route answers, as an `Allow` header lists them (`GET, POST`).
    allow: String,
}

impl Template {
    fn new(route: &str, allow: String) -> Self {
        let segments = route
            .split('/')
            .map(|s| match s.starts_with('{') && s.ends_with('}') {
                true => Segment::Parameter,
                false => Segment::Fixed(s.to_owned()),
            })
            .collect();
        Template {
            route: route.to_owned(),
            segments,
            allow,
        }
    }

    /// How many segments are fixed: where two templates match, the more specific one wins.
    fn fixed(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Fixed(_)))
            .count()
    }

    fn matches(&self, parts: &[&str]) -> bool {
        self.segments
            .iter()
            .zip(parts)
            .all(|(segment, part)| match segment {
                Segment::Fixed(word) => word == part,
                Segment::Parameter => !part.is_empty(),
            })
    }
}

/// The API's route templates, by their number of segments.
#[derive(Debug, Default)]
pub struct RouteTemplates {
    by_length: HashMap<usize, Vec<Template>>,
}

impl RouteTemplates {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a str>) -> Self {
        Self::with_methods(routes.into_iter().map(|route| (route, String::new())))
    }

    /// Templates with the methods each answers (`Allow`).
    fn with_methods<'a>(routes: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        RouteTemplates::default().adding(routes)
    }

    /// These templates too, each among those of its length, the more specific first.
    fn adding<'a>(mut self, routes: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        for (route, allow) in routes {
            let template = Template::new(route, allow);
            let templates = self.by_length.entry(template.segments.len()).or_default();
            templates.push(template);
            templates.sort_by_key(|t| std::cmp::Reverse(t.fixed()));
        }
        self
    }

    /// The paths of an OpenAPI document (JSON), as `routes::service(…).spec()` writes it, and
    /// the operations of each.
    pub fn from_openapi(document: &str) -> Self {
        let document: serde_json::Value =
            serde_json::from_str(document).expect("the API's own OpenAPI document is JSON");
        let paths = document["paths"]
            .as_object()
            .expect("an OpenAPI document has paths");
        Self::with_methods(paths.iter().map(|(route, operations)| {
            let mut methods: Vec<String> = operations
                .as_object()
                .into_iter()
                .flat_map(|operations| operations.keys())
                .filter(|key| HTTP_METHODS.contains(&key.as_str()))
                .map(|method| method.to_ascii_uppercase())
                .collect();
            // A GET route answers HEAD too (poem calls it without the body).
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".into());
            }
            methods.sort();
            (route.as_str(), methods.join(", "))
        }))
    }

    /// These templates too, each answering GET (and so HEAD) only: routes outside the document.
    pub fn and_get_only(self, routes: &[&str]) -> Self {
        self.adding(routes.iter().map(|route| (*route, "GET, HEAD".to_owned())))
    }

    fn template_of(&self, path: &str) -> Option<&Template> {
        let parts: Vec<&str> = path.split('/').collect();
        self.by_length
            .get(&parts.len())
            .and_then(|templates| templates.iter().find(|t| t.matches(&parts)))
    }

    /// The template that serves `path` (the most specific, if several match), or `UNMATCHED`.
    pub fn route_of(&self, path: &str) -> &str {
        self.template_of(path)
            .map_or(UNMATCHED, |t| t.route.as_str())
    }

    /// The methods the route serving `path` answers, for a 405's `Allow` header.
    pub fn allow_of(&self, path: &str) -> Option<&str> {
        self.template_of(path)
            .map(|t| t.allow.as_str())
            .filter(|allow| !allow.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> RouteTemplates {
        RouteTemplates::new([
            "/api/v1/jobs",
            "/api/v1/jobs/{id}",
            "/api/v1/jobs/{id}/cancel",
            "/api/v1/events/{id}",
            "/api/v1/events/stream",
            "/api/v1/projects/{id}/members/{user_id}",
        ])
    }

    #[test]
    fn a_path_is_recorded_as_the_template_that_serves_it() {
        let routes = templates();
        assert_eq!(routes.route_of("/api/v1/jobs"), "/api/v1/jobs");
        assert_eq!(
            routes.route_of("/api/v1/jobs/01935a3e-0000-7000-8000-0000000000a1/cancel"),
            "/api/v1/jobs/{id}/cancel"
        );
        // Whatever the id looks like: a malformed one is still this route's call.
        assert_eq!(
            routes.route_of("/api/v1/jobs/not-an-id"),
            "/api/v1/jobs/{id}"
        );
        assert_eq!(
            routes.route_of("/api/v1/projects/p/members/u"),
            "/api/v1/projects/{id}/members/{user_id}"
        );
        // A fixed segment wins over a parameter in the same place.
        assert_eq!(
            routes.route_of("/api/v1/events/stream"),
            "/api/v1/events/stream"
        );
        assert_eq!(routes.route_of("/api/v1/events/e1"), "/api/v1/events/{id}");
    }

    #[test]
    fn a_path_no_route_serves_is_unmatched() {
        let routes = templates();
        for path in [
            "/api/v1/wp-login.php",
            "/api/v1/jobs/",
            "/api/v1/jobs/x/y/z",
            "/api/v1/jobs//cancel",
            "/api/v2/jobs",
        ] {
            assert_eq!(routes.route_of(path), UNMATCHED, "{path}");
        }
    }

    #[test]
    fn the_templates_come_from_the_openapi_document() {
        let routes = RouteTemplates::from_openapi(&crate::openapi_document());
        assert_eq!(routes.allow_of("/api/v1/jobs"), Some("GET, HEAD, POST"));
        assert_eq!(routes.allow_of("/api/v1/jobs/j1/cancel"), Some("POST"));
        assert_eq!(routes.allow_of("/api/v1/nothing"), None);
        assert_eq!(
            routes.route_of("/api/v1/webhooks/w/deliveries/d/resend"),
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/resend"
        );
        assert_eq!(
            routes.route_of("/api/v1/event-types"),
            "/api/v1/event-types"
        );
        assert_eq!(routes.route_of("/api/v1/nothing-here"), UNMATCHED);
    }
}

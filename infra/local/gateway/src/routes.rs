//! The HTTP API's route table, compiled once when the gateway starts.
//!
//! Each template path (`/users/{userId}`) is split into its segments once, and its route
//! key (`GET /users/{userId}`) written once, so finding the route of a request walks the
//! request path without allocating; only the matched route's path parameters are copied.

use crate::template::HttpRoute;

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// `{name}`: any non-empty segment, passed to the function as path parameter `name`.
    Param(String),
}

/// A path template split into segments, as API Gateway matches it: leading and trailing
/// slashes ignored, one request segment per template segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Compiles a path template such as `/users/{userId}`.
    pub fn new(template: &str) -> Self {
        let segments = template
            .trim_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_string()),
                None => Segment::Literal(s.to_string()),
            })
            .collect();
        Self { segments }
    }

    /// Whether `path` matches, without allocating.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _| {})
    }

    /// The path parameters of `path` (`None` if it does not match).
    pub fn params(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut params = Vec::new();
        self.walk(path, |name, value| params.push((name.to_string(), value.to_string())))
            .then_some(params)
    }

    /// Matches `path` segment by segment, handing each parameter to `param` (in order).
    fn walk<'p>(&self, path: &'p str, mut param: impl FnMut(&str, &'p str)) -> bool {
        let mut actual = path.trim_matches('/').split('/');
        for segment in &self.segments {
            let Some(value) = actual.next() else {
                return false;
            };
            match segment {
                Segment::Literal(literal) if literal != value => return false,
                Segment::Param(_) if value.is_empty() => return false,
                Segment::Param(name) => param(name, value),
                Segment::Literal(_) => {}
            }
        }
        actual.next().is_none()
    }
}

/// One route, ready to match.
#[derive(Clone, Debug)]
struct CompiledRoute {
    route: HttpRoute,
    route_key: String,
    pattern: PathPattern,
}

/// What a request's method and path find in the table.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The first route, in template order, for this path and method.
    Found(Matched<'a>),
    /// Some route has this path, none this method (API Gateway's 405).
    MethodNotAllowed,
    /// No route has this path (404).
    NotFound,
}

/// A matched route and the request's path parameters.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The template's route.
    pub route: &'a HttpRoute,
    /// Its route key, e.g. `GET /users/{userId}`.
    pub route_key: &'a str,
    /// Path parameters, as (name, raw value).
    pub params: Vec<(String, String)>,
}

/// Every HttpApi route of the template, compiled.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    routes: Vec<CompiledRoute>,
}

impl Routes {
    /// Compiles `routes`, keeping their (template) order.
    pub fn new(routes: &[HttpRoute]) -> Self {
        let routes = routes
            .iter()
            .map(|route| CompiledRoute {
                route_key: route.route_key(),
                pattern: PathPattern::new(&route.path),
                route: route.clone(),
            })
            .collect();
        Self { routes }
    }

    /// The route for `method` (upper case) and `path`; a route whose method is `ANY`
    /// takes every method.
    pub fn find(&self, method: &str, path: &str) -> Lookup<'_> {
        let mut path_known = false;
        for r in &self.routes {
            if !r.pattern.matches(path) {
                continue;
            }
            path_known = true;
            if r.route.method == method || r.route.method == "ANY" {
                return Lookup::Found(Matched {
                    route: &r.route,
                    route_key: &r.route_key,
                    params: r.pattern.params(path).unwrap_or_default(),
                });
            }
        }
        match path_known {
            true => Lookup::MethodNotAllowed,
            false => Lookup::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> HttpRoute {
        HttpRoute {
            function: format!("{method}{path}"),
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parameters_are_extracted_and_empty_or_extra_segments_do_not_match() {
        let pattern = PathPattern::new("/users/{userId}");
        assert_eq!(
            pattern.params("/users/abc"),
            Some(vec![("userId".into(), "abc".into())])
        );
        assert_eq!(
            pattern.params("/users/abc/"),
            Some(vec![("userId".into(), "abc".into())])
        );
        assert_eq!(pattern.params("/users/"), None);
        assert_eq!(pattern.params("/users/a/b"), None);
        assert_eq!(pattern.params("/user/a"), None);
        assert!(PathPattern::new("/").matches("/"));
    }

    #[test]
    fn the_first_route_in_template_order_wins_and_any_takes_every_method() {
        let routes = Routes::new(&[
            route("GET", "/messages/{userId}"),
            route("POST", "/messages/{userId}/read"),
            route("ANY", "/messages/{userId}"),
        ]);
        let Lookup::Found(get) = routes.find("GET", "/messages/u1") else {
            panic!("GET must match");
        };
        assert_eq!(get.route_key, "GET /messages/{userId}");
        assert_eq!(get.params, vec![("userId".into(), "u1".into())]);
        let Lookup::Found(post) = routes.find("POST", "/messages/u1") else {
            panic!("ANY must take POST");
        };
        assert_eq!(post.route_key, "ANY /messages/{userId}");
    }

    #[test]
    fn a_known_path_with_another_method_is_405_and_an_unknown_path_404() {
        let routes = Routes::new(&[route("GET", "/profile")]);
        assert!(matches!(routes.find("DELETE", "/profile"), Lookup::MethodNotAllowed));
        assert!(matches!(routes.find("GET", "/nowhere"), Lookup::NotFound));
    }
}

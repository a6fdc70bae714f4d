//! Per-route policy: which admission rules, link mode and skip routes apply to a request.
//!
//! Resolved once at load into a flat list: index 0 is the global policy (`[authz]` and
//! `link.mode`), then each `[[upstreams]]` entry's and each of its `[[upstreams.rules]]`'s,
//! with every key a route leaves out taken from the level above (a rule from its upstream,
//! an upstream from `[authz]`); `skip_auth_routes` add up instead. A request's policy is its
//! route's, or the rule with the longest `path_prefix` covering the canonical path the
//! decision reads. Passports decide who may pass once per policy (src/passport/).

use super::authz::Allowlist;
use crate::config::names::prefix_covers;
use crate::config::{Config, LinkMode, Policy as Written, SkipRoute};

/// One resolved policy.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Who may pass.
    pub allow: Allowlist,
    /// The link mode here (`require_link`, else `link.mode`).
    pub link_mode: LinkMode,
    /// Every skip route that applies (global, the upstream's, the rule's).
    pub skip_auth_routes: Vec<SkipRoute>,
    /// Where it was written (`authz`, `upstreams[0]`, `upstreams[0].rules[1]`), as the
    /// refusal page names it.
    pub label: String,
}

#[derive(Debug, Clone, Default)]
struct RoutePolicies {
    own: usize,
    /// `(path_prefix, policy index)`, longest prefix first.
    rules: Vec<(String, usize)>,
}

/// Every policy, and which applies to a route and path.
#[derive(Debug, Clone)]
pub struct Policies {
    list: Vec<Resolved>,
    routes: Vec<RoutePolicies>,
}

/// The index of the global policy.
pub const GLOBAL: usize = 0;

impl Policies {
    /// Resolves the policies of `config` (routes in `[[upstreams]]` order, as the router).
    pub fn new(config: &Config) -> Self {
        let global = Resolved {
            allow: Allowlist::of(&config.authz),
            link_mode: config.link.mode,
            skip_auth_routes: config.authz.skip_auth_routes.clone(),
            label: "authz".to_string(),
        };
        let mut list = vec![global];
        let mut routes = Vec::with_capacity(config.upstreams.len());
        for (i, up) in config.upstreams.iter().enumerate() {
            let label = format!("upstreams[{i}] ({})", up.name);
            let own = derive(&list[GLOBAL], &up.policy, label);
            let own_index = list.len();
            list.push(own);
            let mut rules = Vec::new();
            for (j, rule) in up.rules.iter().enumerate() {
                let label = format!(
                    "upstreams[{i}].rules[{j}] ({} {})",
                    up.name, rule.path_prefix
                );
                let resolved = derive(&list[own_index], &rule.policy, label);
                rules.push((rule.path_prefix.clone(), list.len()));
                list.push(resolved);
            }
            rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            routes.push(RoutePolicies {
                own: own_index,
                rules,
            });
        }
        Policies { list, routes }
    }

    /// The policy index for a request routed to `route` with canonical path `path`.
    pub fn pick(&self, route: usize, path: &str) -> usize {
        let Some(r) = self.routes.get(route) else {
            return GLOBAL;
        };
        r.rules
            .iter()
            .find(|(prefix, _)| prefix_covers(prefix, path))
            .map_or(r.own, |(_, i)| *i)
    }

    /// The policy at `index` (the global one for an index out of range).
    pub fn get(&self, index: usize) -> &Resolved {
        self.list.get(index).unwrap_or(&self.list[GLOBAL])
    }

    /// Every policy, by index.
    pub fn all(&self) -> &[Resolved] {
        &self.list
    }
}

fn derive(parent: &Resolved, written: &Written, label: String) -> Resolved {
    let mut skip = parent.skip_auth_routes.clone();
    skip.extend(written.skip_auth_routes.iter().cloned());
    Resolved {
        allow: Allowlist {
            email_domains: written
                .email_domains
                .clone()
                .unwrap_or_else(|| parent.allow.email_domains.clone()),
            allowed_emails: written
                .allowed_emails
                .clone()
                .unwrap_or_else(|| parent.allow.allowed_emails.clone()),
            allowed_groups: written
                .allowed_groups
                .clone()
                .unwrap_or_else(|| parent.allow.allowed_groups.clone()),
        },
        link_mode: written.require_link.unwrap_or(parent.link_mode),
        skip_auth_routes: skip,
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_inherit_and_the_longest_prefix_wins() {
        let config = Config::parse(
            r#"
[authz]
email_domains = ["shop.test"]
skip_auth_routes = ["^/health$"]

[[upstreams]]
name = "shop"
url = "http://127.0.0.1:1"
allowed_groups = ["staff"]
skip_auth_routes = ["^/static/"]

[[upstreams.rules]]
path_prefix = "/admin"
allowed_groups = ["admins"]
require_link = "off"

[[upstreams.rules]]
path_prefix = "/admin/public"
allowed_groups = []

[[upstreams]]
name = "api"
url = "http://127.0.0.1:1"
path_prefix = "/api"
"#,
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let p = Policies::new(&config);
        let shop = p.get(p.pick(0, "/catalog"));
        assert_eq!(shop.allow.allowed_groups, ["staff"]);
        assert_eq!(shop.allow.email_domains, ["shop.test"], "inherited");
        assert_eq!(shop.skip_auth_routes.len(), 2, "global + own");
        let admin = p.get(p.pick(0, "/admin/orders"));
        assert_eq!(admin.allow.allowed_groups, ["admins"]);
        assert_eq!(admin.link_mode, LinkMode::Off);
        assert!(admin.label.contains("/admin"), "{}", admin.label);
        assert_eq!(p.pick(0, "/adminx"), p.pick(0, "/"), "segment boundary");
        let open = p.get(p.pick(0, "/admin/public/x"));
        assert!(open.allow.allowed_groups.is_empty());
        assert_eq!(
            open.link_mode,
            LinkMode::Enforce,
            "rules inherit from their upstream only"
        );
        let api = p.get(p.pick(1, "/api/x"));
        assert_eq!(api.link_mode, LinkMode::Enforce);
        assert!(api.allow.allowed_groups.is_empty());
        assert_eq!(p.all().len(), 5);
    }
}

//! Who may pass once authenticated: e-mail domains, allowed e-mails and groups, as set in
//! `[authz]` or by a route's own policy ([`super::routes`] resolves which). Pure functions; the
//! proxy turns a refusal into a 403 page or JSON.

use crate::config::Authz;
use crate::identity::Identity;

/// The admission rules of one policy, resolved (nothing inherited is left to look up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Allowed e-mail domains; empty or `*` means any.
    pub email_domains: Vec<String>,
    /// The only e-mail addresses admitted; empty means any.
    pub allowed_emails: Vec<String>,
    /// Groups of which the user must be in one; empty means any.
    pub allowed_groups: Vec<String>,
}

impl Allowlist {
    /// `[authz]`'s rules.
    pub fn of(authz: &Authz) -> Self {
        Allowlist {
            email_domains: authz.email_domains.clone(),
            allowed_emails: authz.allowed_emails.clone(),
            allowed_groups: authz.allowed_groups.clone(),
        }
    }
}

/// A refusal: which key refused, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The policy key that refused (`email_domains`, `allowed_emails`, `allowed_groups`).
    pub key: &'static str,
    /// Why, for the 403 page.
    pub reason: String,
}

fn denied(key: &'static str, reason: impl Into<String>) -> Denied {
    Denied {
        key,
        reason: reason.into(),
    }
}

/// Whether `identity` may pass; `Err` carries the key that refused and the reason in words.
pub fn check(authz: &Allowlist, identity: &Identity) -> Result<(), Denied> {
    let verified_email = |key: &'static str| -> Result<(String, String), Denied> {
        let Some(email) = identity.email.as_deref() else {
            return Err(denied(
                key,
                "Your account has no email address, and this site admits users by email.",
            ));
        };
        let mut parts = email.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(denied(
                key,
                format!("The email address {email} is not a valid address."),
            ));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(denied(
                key,
                format!("The email address {email} is not a valid address."),
            ));
        }
        if !identity.email_verified {
            return Err(denied(
                key,
                format!("The email address {email} is not verified by the sign-in provider."),
            ));
        }
        Ok((email.to_ascii_lowercase(), domain.to_ascii_lowercase()))
    };
    if !authz.allowed_emails.is_empty() {
        let (email, _) = verified_email("allowed_emails")?;
        if !authz.allowed_emails.contains(&email) {
            return Err(denied(
                "allowed_emails",
                format!("{email} is not among the accounts admitted here."),
            ));
        }
    }
    let domains: Vec<&str> = authz
        .email_domains
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "*")
        .collect();
    let any_domain = authz.email_domains.is_empty() || authz.email_domains.iter().any(|d| d == "*");
    if !any_domain {
        let (_, domain) = verified_email("email_domains")?;
        let allowed = domains.iter().any(|d| match d.strip_prefix('.') {
            Some(apex) => domain == apex || domain.ends_with(*d),
            None => domain == *d,
        });
        if !allowed {
            return Err(denied(
                "email_domains",
                format!("Accounts of {domain} are not admitted to this site."),
            ));
        }
    }
    if !authz.allowed_groups.is_empty()
        && !identity
            .groups
            .iter()
            .any(|g| authz.allowed_groups.iter().any(|a| a == g))
    {
        return Err(denied(
            "allowed_groups",
            "Your account is not in a group that may use this site.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(domains: &[&str], groups: &[&str]) -> Allowlist {
        Allowlist {
            email_domains: domains.iter().map(|s| s.to_string()).collect(),
            allowed_groups: groups.iter().map(|s| s.to_string()).collect(),
            allowed_emails: Vec::new(),
        }
    }

    #[test]
    fn allowed_emails_are_exact_verified_and_checked_with_domains() {
        let a = Allowlist {
            allowed_emails: vec!["ann@shop.test".into()],
            ..authz(&["shop.test"], &[])
        };
        assert!(check(&a, &who("Ann@Shop.test", true, &[])).is_ok());
        let refused = check(&a, &who("bob@shop.test", true, &[])).unwrap_err();
        assert_eq!(refused.key, "allowed_emails");
        assert_eq!(
            check(&a, &who("ann@shop.test", false, &[]))
                .unwrap_err()
                .key,
            "allowed_emails"
        );
        let groups = Allowlist {
            allowed_groups: vec!["admins".into()],
            ..a
        };
        assert_eq!(
            check(&groups, &who("ann@shop.test", true, &["dev"]))
                .unwrap_err()
                .key,
            "allowed_groups"
        );
    }

    fn who(email: &str, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            issuer: "i".into(),
            subject: "s".into(),
            email: Some(email.into()),
            email_verified: verified,
            name: None,
            preferred_username: None,
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn email_domains_are_exact_or_dotted_suffixes() {
        let a = authz(&["example.com", ".corp.test"], &[]);
        assert!(check(&a, &who("a@example.com", true, &[])).is_ok());
        assert!(check(&a, &who("a@EXAMPLE.com", true, &[])).is_ok());
        assert!(check(&a, &who("a@eu.corp.test", true, &[])).is_ok());
        assert!(check(&a, &who("a@corp.test", true, &[])).is_ok());
        assert!(check(&a, &who("a@evil-example.com", true, &[])).is_err());
        assert!(check(&a, &who("a@example.com.evil", true, &[])).is_err());
        assert!(
            check(&a, &who("a@evil.com@example.com", true, &[])).is_err(),
            "two @"
        );
        assert!(
            check(&a, &who("a@example.com", false, &[])).is_err(),
            "unverified"
        );
        assert!(check(&a, &who("@example.com", true, &[])).is_err());
        assert!(check(&authz(&["*"], &[]), &who("x@any.test", false, &[])).is_ok());
        assert!(check(&authz(&[], &[]), &who("x@any.test", false, &[])).is_ok());
    }

    #[test]
    fn groups_need_one_match() {
        let a = authz(&[], &["admins", "ops"]);
        assert!(check(&a, &who("a@x.test", true, &["ops"])).is_ok());
        assert!(check(&a, &who("a@x.test", true, &["dev"])).is_err());
        assert!(check(&a, &who("a@x.test", true, &[])).is_err());
    }
}

//! `[authz]` policy over a signed-in identity: email domains and groups. Pure functions; the
//! proxy turns a refusal into a 403 page or JSON.

use crate::config::Authz;
use crate::oidc::Identity;

/// Whether `identity` may pass; `Err` carries the reason in words for the 403 page.
pub fn check(authz: &Authz, identity: &Identity) -> Result<(), String> {
    let domains: Vec<&str> = authz
        .email_domains
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "*")
        .collect();
    let any_domain = authz.email_domains.is_empty() || authz.email_domains.iter().any(|d| d == "*");
    if !any_domain {
        let Some(email) = identity.email.as_deref() else {
            return Err(
                "Your account has no email address, and this site admits users by email domain."
                    .into(),
            );
        };
        let mut parts = email.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("The email address {email} is not a valid address."));
        };
        if local.is_empty() || domain.is_empty() {
            return Err(format!("The email address {email} is not a valid address."));
        }
        if !identity.email_verified {
            return Err(format!(
                "The email address {email} is not verified by the sign-in provider."
            ));
        }
        let domain = domain.to_ascii_lowercase();
        let allowed = domains.iter().any(|d| match d.strip_prefix('.') {
            Some(apex) => domain == apex || domain.ends_with(*d),
            None => domain == *d,
        });
        if !allowed {
            return Err(format!(
                "Accounts of {domain} are not admitted to this site."
            ));
        }
    }
    if !authz.allowed_groups.is_empty()
        && !identity
            .groups
            .iter()
            .any(|g| authz.allowed_groups.iter().any(|a| a == g))
    {
        return Err("Your account is not in a group that may use this site.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(domains: &[&str], groups: &[&str]) -> Authz {
        let mut a = crate::config::Config::parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap()
        .authz;
        a.email_domains = domains.iter().map(|s| s.to_string()).collect();
        a.allowed_groups = groups.iter().map(|s| s.to_string()).collect();
        a
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

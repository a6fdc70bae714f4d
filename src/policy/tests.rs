//! The decision table of README's "Requests, in order" (steps 3 to 7 and the link rule),
//! over every combination of what [`decide`] reads: each proof (every `Via` with and
//! without each identity, refused by its policy or not), navigation or not, sign-in
//! configured or not, and each link rule. Every combination must fall under exactly one row,
//! and the row says what the answer is.

use time::macros::datetime;

use super::*;

/// One combination of the inputs.
#[derive(Debug, Clone, Copy)]
struct Case {
    proof: Kind,
    navigation: bool,
    sign_in: bool,
    linking: Option<Requirement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nothing,
    InvalidBearer,
    InvalidAccountJwt,
    Unavailable,
    Identity {
        via: Via,
        sso: bool,
        account: bool,
        forbidden: bool,
    },
}

static REFUSED: std::sync::LazyLock<Forbidden> = std::sync::LazyLock::new(|| Forbidden {
    who: "ann@example.test".into(),
    reason:
        "Your account is not in a group that may use this site. (refused by authz: allowed_groups)"
            .into(),
});

impl Case {
    fn proof(&self) -> Proof<'static, &'static str> {
        match self.proof {
            Kind::Nothing => Proof::Nothing,
            Kind::InvalidBearer => Proof::InvalidBearer("bearer"),
            Kind::InvalidAccountJwt => Proof::InvalidAccountJwt("account jwt"),
            Kind::Unavailable => Proof::Unavailable("store"),
            Kind::Identity {
                via,
                sso,
                account,
                forbidden,
            } => Proof::Identity(Proven {
                via,
                sso,
                account,
                forbidden: forbidden.then(|| &*REFUSED),
            }),
        }
    }

    fn rules(&self) -> Rules {
        Rules {
            sign_in: self.sign_in,
            linking: self.linking,
        }
    }

    fn identity(&self) -> Option<(Via, bool, bool, bool)> {
        match self.proof {
            Kind::Identity {
                via,
                sso,
                account,
                forbidden,
            } => Some((via, sso, account, forbidden)),
            _ => None,
        }
    }
}

fn every_case() -> Vec<Case> {
    let mut kinds = vec![
        Kind::Nothing,
        Kind::InvalidBearer,
        Kind::InvalidAccountJwt,
        Kind::Unavailable,
    ];
    for via in [Via::Session, Via::Bearer, Via::AccountJwt] {
        for sso in [false, true] {
            for account in [false, true] {
                for forbidden in [false, true] {
                    kinds.push(Kind::Identity {
                        via,
                        sso,
                        account,
                        forbidden,
                    });
                }
            }
        }
    }
    let mut cases = Vec::new();
    for proof in kinds {
        for navigation in [false, true] {
            for sign_in in [false, true] {
                for linking in [
                    None,
                    Some(Requirement::Enforced),
                    Some(Requirement::Grace),
                    Some(Requirement::Off),
                ] {
                    cases.push(Case {
                        proof,
                        navigation,
                        sign_in,
                        linking,
                    });
                }
            }
        }
    }
    cases
}

type Expected = Admission<'static, &'static str>;

/// A row of the table: its README step, when it applies, and its answer.
struct Row {
    step: &'static str,
    applies: fn(&Case) -> bool,
    answer: fn(&Case) -> Expected,
}

fn unlinked_enforced(c: &Case) -> bool {
    matches!(c.identity(), Some((_, sso, account, false)) if (sso || account) && !(sso && account))
        && c.linking == Some(Requirement::Enforced)
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            step: "store or provider unreachable: 503",
            applies: |c| c.proof == Kind::Unavailable,
            answer: |_| Admission::Unavailable("store"),
        },
        Row {
            step: "3. invalid bearer token: 401 invalid_token, even for a browser",
            applies: |c| c.proof == Kind::InvalidBearer,
            answer: |_| Admission::InvalidToken("bearer"),
        },
        Row {
            step: "5. invalid account JWT, browser navigation: sent to sign in",
            applies: |c| c.proof == Kind::InvalidAccountJwt && c.navigation && c.sign_in,
            answer: |_| Admission::SignIn,
        },
        Row {
            step: "5. invalid account JWT, anything else: 401 invalid_token",
            applies: |c| c.proof == Kind::InvalidAccountJwt && !(c.navigation && c.sign_in),
            answer: |_| Admission::InvalidToken("account jwt"),
        },
        Row {
            step: "6. nothing, browser navigation: sent to sign in",
            applies: |c| c.proof == Kind::Nothing && c.navigation && c.sign_in,
            answer: |_| Admission::SignIn,
        },
        Row {
            step: "6. nothing, anything else: 401 JSON",
            applies: |c| c.proof == Kind::Nothing && !(c.navigation && c.sign_in),
            answer: |_| Admission::Unauthenticated { page: false },
        },
        Row {
            step: "a proof that names no identity: 401",
            applies: |c| matches!(c.identity(), Some((_, false, false, _))),
            answer: |c| Admission::Unauthenticated { page: c.navigation },
        },
        Row {
            step: "7. refused by the route's policy: 403 naming who and which rule",
            applies: |c| matches!(c.identity(), Some((_, sso, account, true)) if sso || account),
            answer: |_| Admission::Forbidden(&REFUSED),
        },
        Row {
            step: "4. linked: forwarded, status linked",
            applies: |c| {
                matches!(c.identity(), Some((_, true, true, false))) && c.linking.is_some()
            },
            answer: |c| Admission::Pass {
                via: c.identity().map(|i| i.0).unwrap_or(Via::Session),
                link: LinkStatus::Linked,
            },
        },
        Row {
            step: "4. linking not in play: forwarded, no status",
            applies: |c| {
                matches!(c.identity(), Some((_, sso, account, false)) if sso || account)
                    && c.linking.is_none()
            },
            answer: |c| Admission::Pass {
                via: c.identity().map(|i| i.0).unwrap_or(Via::Session),
                link: LinkStatus::NotInPlay,
            },
        },
        Row {
            step: "mode off: unlinked forwarded, no status",
            applies: |c| {
                matches!(c.identity(), Some((_, sso, account, false)) if (sso || account) && !(sso && account))
                    && c.linking == Some(Requirement::Off)
            },
            answer: |c| Admission::Pass {
                via: c.identity().map(|i| i.0).unwrap_or(Via::Session),
                link: LinkStatus::NotInPlay,
            },
        },
        Row {
            step: "before required_from or mode warn: unlinked forwarded, status grace",
            applies: |c| {
                matches!(c.identity(), Some((_, sso, account, false)) if (sso || account) && !(sso && account))
                    && c.linking == Some(Requirement::Grace)
            },
            answer: |c| Admission::Pass {
                via: c.identity().map(|i| i.0).unwrap_or(Via::Session),
                link: LinkStatus::Grace,
            },
        },
        Row {
            step: "4./5. unlinked while enforcing, not a browser: 401 insufficient_user_authentication",
            applies: |c| unlinked_enforced(c) && !c.navigation,
            answer: |_| Admission::LinkRequired,
        },
        Row {
            step: "4./5. Magento.com identity without a link, browser: the page explaining the rule",
            applies: |c| {
                unlinked_enforced(c) && c.navigation && matches!(c.identity(), Some((_, true, _, _)))
            },
            answer: |_| Admission::LinkPage,
        },
        Row {
            step: "4./5. cloud account without a link, browser: to Magento.com to connect (Method 1)",
            applies: |c| {
                unlinked_enforced(c)
                    && c.navigation
                    && matches!(c.identity(), Some((_, false, true, _)))
            },
            answer: |_| Admission::Connect,
        },
    ]
}

#[test]
fn every_combination_falls_under_exactly_one_row_and_gets_its_answer() {
    let rows = rows();
    let cases = every_case();
    assert_eq!(cases.len(), (4 + 3 * 2 * 2 * 2) * 2 * 2 * 4);
    let mut used = vec![0usize; rows.len()];
    for case in &cases {
        let matching: Vec<usize> = (0..rows.len())
            .filter(|&i| (rows[i].applies)(case))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{case:?} falls under {:?}",
            matching.iter().map(|&i| rows[i].step).collect::<Vec<_>>()
        );
        let row = &rows[matching[0]];
        used[matching[0]] += 1;
        let answer = decide(case.proof(), case.navigation, case.rules());
        assert_eq!(answer, (row.answer)(case), "{case:?} under {:?}", row.step);
    }
    for (row, n) in rows.iter().zip(&used) {
        assert!(*n > 0, "no combination reaches {:?}", row.step);
    }
}

#[test]
fn each_answer_has_its_decision_label() {
    let label = |a: Expected| a.decision().as_str();
    for via in [Via::Session, Via::AccountJwt] {
        let pass = Admission::Pass {
            via,
            link: LinkStatus::Linked,
        };
        assert_eq!(
            label(pass),
            "session",
            "the platform's JWT stands in for a session"
        );
    }
    let bearer = Admission::Pass {
        via: Via::Bearer,
        link: LinkStatus::Grace,
    };
    assert_eq!(label(bearer), "bearer");
    assert_eq!(label(Admission::Forbidden(&REFUSED)), "forbidden");
    assert_eq!(label(Admission::LinkPage), "link_required");
    assert_eq!(label(Admission::LinkRequired), "link_required");
    assert_eq!(label(Admission::Connect), "redirect_login");
    assert_eq!(label(Admission::SignIn), "redirect_login");
    assert_eq!(
        label(Admission::Unauthenticated { page: true }),
        "unauthenticated"
    );
    assert_eq!(label(Admission::InvalidToken("x")), "unauthenticated");
    assert_eq!(label(Admission::Unavailable("x")), "refused");
}

#[test]
fn the_rule_starts_on_1_april_2020() {
    let from = datetime!(2020-04-01 00:00 UTC);
    let at = |mode, now| requirement(mode, from, now);
    assert_eq!(
        at(LinkMode::Enforce, datetime!(2020-03-31 23:59:59 UTC)),
        Requirement::Grace
    );
    assert_eq!(at(LinkMode::Enforce, from), Requirement::Enforced);
    assert_eq!(
        at(LinkMode::Enforce, datetime!(2026-11-25 12:00 UTC)),
        Requirement::Enforced
    );
    assert_eq!(
        at(LinkMode::Warn, datetime!(2030-01-01 00:00 UTC)),
        Requirement::Grace
    );
    assert_eq!(
        at(LinkMode::Off, datetime!(2030-01-01 00:00 UTC)),
        Requirement::Off
    );
}

#[test]
fn modes_and_statuses_have_their_names() {
    assert_eq!(mode_label(LinkMode::Warn, Requirement::Grace), "warn");
    assert_eq!(mode_label(LinkMode::Enforce, Requirement::Grace), "grace");
    assert_eq!(
        mode_label(LinkMode::Enforce, Requirement::Enforced),
        "enforce"
    );
    assert_eq!(mode_label(LinkMode::Off, Requirement::Off), "off");
    assert_eq!(LinkStatus::Linked.label(), Some("linked"));
    assert_eq!(LinkStatus::Grace.label(), Some("grace"));
    assert_eq!(LinkStatus::NotInPlay.label(), None);
}

//! Provider presets: the named bundles (`preset = "adobe-ims"`) and the values each fills
//! in where the provider's table leaves a key unset.

use super::{LogoutParams, TokenAuthMethod};

/// A named bundle of provider settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `"adobe-ims"`: Adobe IMS (the Magento.com login) at `ims-na1.adobelogin.com`.
    AdobeIms,
}

impl Preset {
    /// The word used for it in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::AdobeIms => "adobe-ims",
        }
    }
}

/// What a preset fills in.
pub(super) struct PresetValues {
    pub(super) issuer: &'static str,
    pub(super) discovery: &'static str,
    pub(super) authorize: &'static str,
    pub(super) token: &'static str,
    pub(super) userinfo: &'static str,
    pub(super) jwks: &'static str,
    pub(super) end_session: &'static str,
    pub(super) scopes: &'static [&'static str],
    pub(super) token_auth_method: TokenAuthMethod,
    pub(super) logout_params: LogoutParams,
    pub(super) scope_separator: &'static str,
}

impl PresetValues {
    pub(super) fn of(preset: Preset) -> PresetValues {
        match preset {
            // Paths under the issuer (`https://ims-na1.adobelogin.com` unless `issuer` says
            // otherwise), as Adobe documents them. Discovery wins where it names an endpoint
            // (`preset_endpoints = "documented"` turns that round).
            Preset::AdobeIms => PresetValues {
                issuer: "https://ims-na1.adobelogin.com",
                discovery: "/ims/.well-known/openid-configuration",
                authorize: "/ims/authorize/v2",
                token: "/ims/token/v3",
                userinfo: "/ims/userinfo/v2",
                jwks: "/ims/keys",
                // Not in IMS's discovery document: its own logout, with its own parameters.
                end_session: "/ims/logout/v1",
                // offline_access: IMS issues refresh tokens only for it.
                scopes: &["openid", "AdobeID", "email", "profile", "offline_access"],
                // IMS takes the client credentials in the token request body.
                token_auth_method: TokenAuthMethod::ClientSecretPost,
                logout_params: LogoutParams::Ims,
                // IMS documents its scopes comma-separated (`openid,AdobeID,...`).
                scope_separator: ",",
            },
        }
    }
}

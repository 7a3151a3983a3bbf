//! The plugins of each route: the global PluginConfig
//! (`--global-plugin-config`), then the route's own, which are its
//! `pluginConfigRef` overridden per plugin by its inline `plugins`.
//!
//! A plugin configuration that cannot be used is an error on the object
//! that holds it (the PluginConfig, or the ApiRoute for inline plugins or
//! the Ingress for annotations), and the route is not served: a route must
//! never run without the limits or checks it asked for. Routes that share
//! a `limitCount` group must agree on its settings.

use std::sync::Arc;

use foldhash::{HashMap, HashSet};

use super::diagnostics::{Kind, Reason, Subject};
use super::state::ObjectKey;
use super::tls::secret_field;
use super::{Ctx, TranslateOptions};
use crate::ai::AiRoute;
use crate::api::Plugins;
use crate::cache::CacheRule;
use crate::plugins::{self, BuildEnv, ConfigError, Owner, Plugin};

/// Plugin state of one translation.
#[derive(Default)]
pub(super) struct PluginSets {
    global: Vec<Arc<dyn Plugin>>,
    /// The global `proxyCache`, for routes without their own.
    global_cache: Option<Arc<CacheRule>>,
    /// PluginConfigs whose settings cannot be used.
    invalid: HashSet<ObjectKey>,
    /// `limitCount` groups: settings fingerprint and the first user.
    groups: HashMap<String, (u64, Arc<str>)>,
}

/// Checks every PluginConfig and builds the global plugins.
pub(super) fn prepare(ctx: &mut Ctx<'_>, opts: &TranslateOptions) {
    let state = ctx.state;
    for (key, pc) in &state.plugin_configs {
        let obj = Subject {
            kind: Kind::PluginConfig,
            key,
        };
        let owner = Owner(format!("pluginconfig/{}/{}", key.namespace, key.name).into());
        // The AI plugins are checked here only with their aiProxy: the
        // others may serve a route that has aiProxy inline.
        let with_ai = pc.spec.plugins.ai_proxy.is_some();
        if let Err(errors) = build(ctx, &key.namespace, &pc.spec.plugins, &owner, with_ai) {
            report(ctx, obj, "spec.plugins", &errors);
            ctx.plugins.invalid.insert(key.clone());
        }
    }
    let Some(key) = &opts.global_plugins else {
        return;
    };
    let obj = Subject {
        kind: Kind::PluginConfig,
        key,
    };
    match state.plugin_configs.get(key) {
        None => ctx.diags.report(
            obj,
            "",
            Reason::PluginConfigNotFound,
            "--global-plugin-config names a PluginConfig that does not exist; no global plugins run",
        ),
        Some(pc) if pc.spec.plugins.has_ai() => ctx.diags.report(
            obj,
            "spec.plugins",
            Reason::InvalidSpec,
            "the AI plugins (aiProxy, aiRateLimit, aiPrompt*) apply to routes, not globally; no global plugins run",
        ),
        Some(pc) if !ctx.plugins.invalid.contains(key) => {
            let owner = Owner("global".into());
            if let Ok(built) = build(ctx, &key.namespace, &pc.spec.plugins, &owner, false) {
                ctx.plugins.global = built.plugins;
                ctx.plugins.global_cache = built.cache;
            }
        }
        Some(_) => {}
    }
}

/// The plugins of a route (or of a plugin block), with its cache.
#[derive(Clone, Default)]
pub(super) struct Chosen {
    pub plugins: Vec<Arc<dyn Plugin>>,
    pub cache: Option<Arc<CacheRule>>,
    /// The route's AI gateway (`aiProxy`); never global.
    pub ai: Option<Arc<AiRoute>>,
}

/// Runs `f` with what building plugins of `namespace` may read.
fn with_env<R>(ctx: &Ctx<'_>, namespace: &str, f: impl FnOnce(&BuildEnv<'_>) -> R) -> R {
    let state = ctx.state;
    let secret = move |name: &str, value: &str| {
        let s = state.secrets.get(&ObjectKey::new(namespace, name))?;
        secret_field(s, value).map(<[u8]>::to_vec)
    };
    let consumers = move |labels: &std::collections::BTreeMap<String, String>| {
        consumers_in(state, namespace, labels)
    };
    let env = BuildEnv {
        namespace,
        redis: ctx.redis,
        secret: &secret,
        consumers: &consumers,
    };
    f(&env)
}

/// Builds a plugin block: its plugins, its `proxyCache`, which is not a
/// plugin but a stage of the proxy (see `proxy::forward::cache`), and its
/// AI gateway (`aiProxy`, see `proxy::forward::ai`).
fn build(
    ctx: &Ctx<'_>,
    namespace: &str,
    set: &Plugins,
    owner: &Owner,
    with_ai: bool,
) -> Result<Chosen, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let plugins =
        with_env(ctx, namespace, |env| plugins::build(set, owner, env)).unwrap_or_else(|e| {
            errors.extend(e);
            Vec::new()
        });
    let ai = if with_ai {
        with_env(ctx, namespace, |env| crate::ai::build(set, owner, env)).unwrap_or_else(|e| {
            errors.extend(e);
            None
        })
    } else {
        None
    };
    let cache = set
        .proxy_cache
        .as_ref()
        .map(|c| CacheRule::build(c, &ctx.cache).map(Arc::new))
        .transpose()
        .unwrap_or_else(|e| {
            errors.push(e);
            None
        });
    if errors.is_empty() {
        Ok(Chosen { plugins, cache, ai })
    } else {
        Err(errors)
    }
}

fn report(ctx: &mut Ctx<'_>, obj: Subject<'_>, prefix: &str, errors: &[ConfigError]) {
    for e in errors {
        ctx.diags.report(
            obj,
            format!("{prefix}.{}", e.field),
            Reason::InvalidSpec,
            e.message.clone(),
        );
    }
}

/// Where a route's plugins come from.
pub(super) struct RoutePlugins<'a> {
    /// Inline plugins and the field that holds them.
    pub inline: Option<(&'a Plugins, String)>,
    /// A PluginConfig in the object's namespace.
    pub reference: Option<&'a str>,
    /// Owner of the route's plugin state (its route name).
    pub owner: &'a str,
}

/// The plugins of one route, global ones first, and its cache (its own
/// `proxyCache`, else the global one). On error the diagnostics are
/// already reported and the route must not be served.
pub(super) fn for_route(
    ctx: &mut Ctx<'_>,
    obj: Subject<'_>,
    route: RoutePlugins<'_>,
) -> Result<Chosen, ()> {
    let namespace = obj.key.namespace.clone();
    let referenced = match route.reference {
        None => None,
        Some(name) => {
            let key = ObjectKey::new(namespace.clone(), name);
            if ctx.plugins.invalid.contains(&key) {
                ctx.diags.report(
                    obj,
                    route.inline.as_ref().map_or_else(String::new, |(_, f)| f.clone()),
                    Reason::InvalidSpec,
                    format!("PluginConfig {namespace}/{name} is invalid (see its status); the route is not served"),
                );
                return Err(());
            }
            ctx.state
                .plugin_configs
                .get(&key)
                .map(|pc| &pc.spec.plugins)
        }
    };
    let merged = match (referenced, &route.inline) {
        (None, None) => None,
        (Some(r), None) => Some(r.clone()),
        (None, Some((i, _))) => Some((*i).clone()),
        (Some(r), Some((i, _))) => Some(r.overridden_by(i)),
    };
    let mut list = ctx.plugins.global.clone();
    let mut cache = ctx.plugins.global_cache.clone();
    let mut ai = None;
    if let Some(set) = merged.filter(|s| !s.is_empty()) {
        if let Some(c) = &set.limit_count
            && let Some(group) = &c.group
        {
            let id = format!("{namespace}/{group}");
            let fp = plugins::fingerprint(c);
            let source = ctx.source(obj);
            match ctx.plugins.groups.get(&id) {
                Some((seen, first)) if *seen != fp => {
                    let field = route
                        .inline
                        .as_ref()
                        .map_or_else(String::new, |(_, f)| f.clone());
                    let msg = format!(
                        "limitCount group {group:?} is used by {first} with other settings; routes of a group must agree"
                    );
                    ctx.diags.report(obj, field, Reason::Conflict, msg);
                    return Err(());
                }
                Some(_) => {}
                None => {
                    ctx.plugins.groups.insert(id, (fp, source));
                }
            }
        }
        let owner = Owner(route.owner.into());
        match build(ctx, &namespace, &set, &owner, true) {
            Ok(own) => {
                list.extend(own.plugins);
                if own.cache.is_some() {
                    cache = own.cache;
                }
                ai = own.ai;
            }
            Err(errors) => {
                // Errors in a referenced PluginConfig were reported on it
                // already; what is left is inline.
                let prefix = route
                    .inline
                    .as_ref()
                    .map_or_else(String::new, |(_, f)| f.clone());
                report(ctx, obj, &prefix, &errors);
                return Err(());
            }
        }
    }
    plugins::sort(&mut list);
    Ok(Chosen {
        plugins: list,
        cache,
        ai,
    })
}

/// The consumer Secrets of `namespace` whose labels include `labels`.
fn consumers_in(
    state: &super::ClusterState,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<plugins::auth::ConsumerSecret> {
    state
        .secrets
        .range(ObjectKey::new(namespace, "")..)
        .take_while(|(k, _)| k.namespace == namespace)
        .filter_map(|(k, s)| {
            let own = s.metadata.labels.as_ref()?;
            let consumer = own.get(plugins::auth::CONSUMER_LABEL)?;
            if consumer.is_empty() || !labels.iter().all(|(l, v)| own.get(l) == Some(v)) {
                return None;
            }
            let values = plugins::auth::CREDENTIAL_KEYS
                .iter()
                .filter_map(|name| secret_field(s, name).map(|v| ((*name).to_owned(), v.to_vec())))
                .collect();
            Some(plugins::auth::ConsumerSecret {
                consumer: consumer.as_str().into(),
                secret: format!("{}/{}", k.namespace, k.name),
                values,
            })
        })
        .collect()
}

//! Declarations of ergon's gated actors. Use them through `actors::gated` and
//! `actors::gate_error`, whose documentation (in `actors::gate`) has the examples.
//!
//! - [`macro@gated`] on an actor's `impl` block: every method marked `#[operation(...)]` is one
//!   operation, declared once: its name (the method's, which is the snake_case of its message
//!   type), the capabilities it requires, its base cost, its resource, its validation and its
//!   body. From that it writes the message's `Message` and `Operation` impls, the `Handler` that
//!   passes the message through the gate, the actor's cost table (with `top_up` and `status`),
//!   its `Actor` and `GatedActor` impls and its default configuration.
//! - [`macro@gate_error`] on an actor's error enum: adds the refusals every gated actor can
//!   answer (`PermissionDenied`, `InsufficientEnergy`, `InvalidRequest`, `AuditUnavailable`, and on request
//!   `InvalidCapabilities` and `InvalidScope`) and implements `GateError`, so the enum lists only
//!   the actor's own failures.
//!
//! The generated code names the crates `actors` (ergon-actors) and `actix`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{quote, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Error, Expr, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemEnum, ItemImpl, Lit, PathArguments, ReturnType, Token,
    Type,
};

/// Declares a gated actor's operations on its `impl` block. See `actors::gate` for an example.
///
/// Arguments of `#[gated(...)]`: `error = Type` (the actor's error enum), `scope = expr` (the
/// scope it acts in), `budget = joules` and `grants = [Capability, ...]` (its defaults),
/// optionally `mailbox = n` (1024), `reply_timeout_ms = n` (1000), `settings = Type` (its own
/// configuration, flattened into its section), `started = method` (called when the actor starts)
/// and `gate = field` (`gate`).
///
/// Arguments of `#[operation(...)]` on a method `fn name(&mut self, msg: Message[, ctx: &mut
/// Context<Self>]) -> Result<Output, Error>` (or `-> gate::Pending<Self, Output, Error>` for a body
/// that awaits other actors): `requires = [Capability, ...]`, `cost = joules`, optionally
/// `resource = expr` (a `&str`, with `msg` in scope; the operation's name by default) and
/// `validate = expr` (a `Result<(), Error>`, with `msg` and `rules` in scope).
#[proc_macro_attribute]
pub fn gated(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut actor = ActorArgs::default();
    let parser = syn::meta::parser(|meta| actor.parse(meta));
    syn::parse_macro_input!(args with parser);
    let block = syn::parse_macro_input!(item as ItemImpl);
    expand_gated(actor, block).unwrap_or_else(Error::into_compile_error).into()
}

/// Adds the gate's refusals to an actor's error enum and implements `GateError` for it. Write it
/// above `#[derive(thiserror::Error)]`; `#[gate_error(InvalidCapabilities, InvalidScope)]` adds
/// those two as well. A variant the enum declares itself is kept as it is.
#[proc_macro_attribute]
pub fn gate_error(args: TokenStream, item: TokenStream) -> TokenStream {
    let optional = syn::parse_macro_input!(args with Punctuated::<Ident, Token![,]>::parse_terminated);
    let error = syn::parse_macro_input!(item as ItemEnum);
    expand_gate_error(optional, error).unwrap_or_else(Error::into_compile_error).into()
}

#[derive(Default)]
struct ActorArgs {
    error: Option<Type>,
    scope: Option<Expr>,
    budget: Option<Lit>,
    grants: Option<Vec<Ident>>,
    mailbox: Option<Expr>,
    reply_timeout_ms: Option<Expr>,
    settings: Option<Type>,
    started: Option<Ident>,
    gate: Option<Ident>,
}

impl ActorArgs {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
        match key.as_str() {
            "error" => self.error = Some(meta.value()?.parse()?),
            "scope" => self.scope = Some(meta.value()?.parse()?),
            "budget" => self.budget = Some(joules(meta.value()?, "budget")?),
            "grants" => self.grants = Some(capabilities(meta.value()?)?),
            "mailbox" => self.mailbox = Some(meta.value()?.parse()?),
            "reply_timeout_ms" => self.reply_timeout_ms = Some(meta.value()?.parse()?),
            "settings" => self.settings = Some(meta.value()?.parse()?),
            "started" => self.started = Some(meta.value()?.parse()?),
            "gate" => self.gate = Some(meta.value()?.parse()?),
            _ => {
                return Err(meta.error(
                    "unknown argument; #[gated] takes error, scope, budget, grants, mailbox, reply_timeout_ms, settings, started and gate",
                ))
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct OperationArgs {
    requires: Option<Vec<Ident>>,
    cost: Option<Lit>,
    resource: Option<Expr>,
    validate: Option<Expr>,
}

impl OperationArgs {
    fn parse(&mut self, meta: syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
        match key.as_str() {
            "requires" => self.requires = Some(capabilities(meta.value()?)?),
            "cost" => self.cost = Some(joules(meta.value()?, "cost")?),
            "resource" => self.resource = Some(meta.value()?.parse()?),
            "validate" => self.validate = Some(meta.value()?.parse()?),
            _ => return Err(meta.error("unknown argument; #[operation] takes requires, cost, resource and validate")),
        }
        Ok(())
    }
}

/// `[A, B]`: capability names.
fn capabilities(input: ParseStream<'_>) -> syn::Result<Vec<Ident>> {
    let content;
    syn::bracketed!(content in input);
    Ok(content.parse_terminated(Ident::parse, Token![,])?.into_iter().collect())
}

/// A literal number of joules: finite and not negative, checked here so that a table of costs
/// cannot hold one the gate would refuse.
fn joules(input: ParseStream<'_>, what: &str) -> syn::Result<Lit> {
    let lit: Lit = input.parse()?;
    let value = match &lit {
        Lit::Float(f) => f.base10_parse::<f64>()?,
        Lit::Int(i) => i.base10_parse::<f64>()?,
        other => return Err(Error::new(other.span(), format!("{what} is a number of joules, such as 10.0"))),
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(Error::new(lit.span(), format!("{what} must be a finite, non-negative number of joules")));
    }
    Ok(lit)
}

/// `10` and `10.0` alike, as an `f64` literal.
fn as_f64(lit: &Lit) -> Tokens {
    match lit {
        Lit::Int(i) => {
            let value: f64 = i.base10_parse().unwrap_or(0.0);
            let value = syn::LitFloat::new(&format!("{value:?}"), i.span());
            quote!(#value)
        }
        other => other.to_token_stream(),
    }
}

fn caps(names: &[Ident]) -> Tokens {
    quote!(::actors::security::CapSet::of(&[#(::actors::security::Capability::#names),*]))
}

/// `NodeManager` -> `node_manager`.
fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What one `#[operation]` method declares.
struct Operation {
    method: Ident,
    message: Type,
    output: Type,
    asynchronous: bool,
    with_context: bool,
    args: OperationArgs,
    ret: Type,
}

fn required<T>(value: Option<T>, span: Span, message: &str) -> syn::Result<T> {
    value.ok_or_else(|| Error::new(span, message))
}

fn operation(method: &mut ImplItemFn) -> syn::Result<Option<Operation>> {
    let Some(at) = method.attrs.iter().position(|a| a.path().is_ident("operation")) else {
        return Ok(None);
    };
    let attr = method.attrs.remove(at);
    let mut args = OperationArgs::default();
    attr.parse_nested_meta(|meta| args.parse(meta))?;
    let sig = &method.sig;
    let span = sig.ident.span();
    if args.requires.is_none() {
        return Err(Error::new(attr.span(), "an operation says what it requires: requires = [Capability, ...] (or [])"));
    }
    if args.cost.is_none() {
        return Err(Error::new(attr.span(), "an operation has a base cost: cost = joules"));
    }
    let mut inputs = sig.inputs.iter();
    if !matches!(inputs.next(), Some(FnArg::Receiver(r)) if r.mutability.is_some() && r.reference.is_some()) {
        return Err(Error::new(span, "an operation's body takes &mut self"));
    }
    let message = match inputs.next() {
        Some(FnArg::Typed(arg)) => (*arg.ty).clone(),
        _ => return Err(Error::new(span, "an operation's body takes its message: fn name(&mut self, msg: Message)")),
    };
    let with_context = inputs.next().is_some();
    if inputs.next().is_some() {
        return Err(Error::new(span, "an operation's body takes &mut self, its message and at most the actor's context"));
    }
    let Type::Path(path) = &message else {
        return Err(Error::new(message.span(), "an operation's message is a named type"));
    };
    let type_name = path.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
    let expected = snake_case(&type_name);
    if sig.ident != expected {
        return Err(Error::new(
            span,
            format!("the operation of {type_name} is `{expected}`: one name in the type, the audit log and the configuration"),
        ));
    }
    let ReturnType::Type(_, ret) = &sig.output else {
        return Err(Error::new(span, "an operation returns Result<Output, Error> or gate::Pending<Self, Output, Error>"));
    };
    let (output, asynchronous) = output_of(ret)?;
    Ok(Some(Operation { method: sig.ident.clone(), message, output, asynchronous, with_context, args, ret: (**ret).clone() }))
}

/// The output type of `Result<Output, Error>` (synchronous) or `Pending<Self, Output, Error>`.
fn output_of(ret: &Type) -> syn::Result<(Type, bool)> {
    let wrong = || Error::new(ret.span(), "an operation returns Result<Output, Error> or gate::Pending<Self, Output, Error>");
    let Type::Path(path) = ret else { return Err(wrong()) };
    let last = path.path.segments.last().ok_or_else(wrong)?;
    let PathArguments::AngleBracketed(generics) = &last.arguments else { return Err(wrong()) };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match (last.ident.to_string().as_str(), types.as_slice()) {
        ("Result", [output, _]) => Ok(((*output).clone(), false)),
        ("Pending", [_, output, _]) => Ok(((*output).clone(), true)),
        _ => Err(wrong()),
    }
}

fn expand_gated(args: ActorArgs, mut block: ItemImpl) -> syn::Result<Tokens> {
    let span = block.self_ty.span();
    let error = required(args.error, span, "#[gated] needs error = the actor's error type")?;
    let scope = required(args.scope, span, "#[gated] needs scope = the scope the actor acts in")?;
    let budget = as_f64(&required(args.budget, span, "#[gated] needs budget = its default budget in joules")?);
    let grants = caps(&required(args.grants, span, "#[gated] needs grants = [the capabilities it holds]")?);
    let mailbox = args.mailbox.map_or(quote!(1024), |m| m.to_token_stream());
    let reply_timeout = args.reply_timeout_ms.map_or(quote!(1000), |m| m.to_token_stream());
    let settings = args.settings.map_or(quote!(::actors::gate::NoSettings), |s| s.to_token_stream());
    let gate = args.gate.unwrap_or_else(|| Ident::new("gate", Span::call_site()));
    let started = args.started.iter();
    let actor = block.self_ty.clone();

    let mut operations = Vec::new();
    for item in &mut block.items {
        if let ImplItem::Fn(method) = item {
            operations.extend(operation(method)?);
        }
    }

    let mut generated = Vec::new();
    let mut table = Vec::new();
    for (i, op) in operations.iter().enumerate() {
        // `top_up` and `status` come first in every table.
        let index = i + 2;
        let Operation { method, message, output, asynchronous, with_context, args, ret } = op;
        let name = method.to_string();
        let requires = caps(args.requires.as_deref().unwrap_or_default());
        let cost = as_f64(args.cost.as_ref().expect("checked"));
        let resource = args.resource.as_ref().map_or(quote!(#name), |r| r.to_token_stream());
        let validate = args.validate.as_ref().map_or(quote!(::core::result::Result::Ok(())), |v| v.to_token_stream());
        let run = if *asynchronous { quote!(run_async) } else { quote!(run) };
        let handler_result = if *asynchronous { ret.to_token_stream() } else { quote!(::actors::gate::Reply<#output, #error>) };
        let pass_context = with_context.then(|| quote!(, ctx));
        table.push(quote!(::actors::gate::Declared { name: #name, cost: #cost, requires: #requires }));
        generated.push(quote! {
            impl ::actix::Message for #message {
                type Result = ::core::result::Result<#output, #error>;
            }

            impl ::actors::gate::Operation for #message {
                type Output = #output;
                type Error = #error;
                const NAME: &'static str = #name;
                const INDEX: usize = #index;
                const REQUIRES: ::actors::security::CapSet = #requires;

                fn context(&self) -> &::actors::security::SecurityContext {
                    &self.ctx
                }

                #[allow(unused_variables)]
                fn resource(&self) -> &str {
                    let msg = self;
                    let resource: &str = #resource;
                    resource
                }

                #[allow(unused_variables)]
                fn validate(&self, rules: &::actors::gate::Rules<'_>) -> ::core::result::Result<(), #error> {
                    let msg = self;
                    #validate
                }
            }

            impl ::actix::Handler<#message> for #actor {
                type Result = #handler_result;

                #[allow(unused_variables)]
                fn handle(&mut self, msg: #message, ctx: &mut ::actix::Context<Self>) -> Self::Result {
                    ::actors::gate::#run(self, msg, |actor, msg| actor.#method(msg #pass_context))
                }
            }
        });
    }

    Ok(quote! {
        #block

        #(#generated)*

        impl ::actors::gate::GatedActor for #actor {
            type Settings = #settings;
            const SCOPE: &'static str = #scope;
            const OPERATIONS: &'static [::actors::gate::Declared] =
                &[::actors::gate::Declared::TOP_UP, ::actors::gate::Declared::STATUS, #(#table),*];

            fn gate(&mut self) -> &mut ::actors::gate::Gate {
                &mut self.#gate
            }

            fn gate_ref(&self) -> &::actors::gate::Gate {
                &self.#gate
            }

            fn default_config() -> ::actors::gate::ActorConfig<Self::Settings> {
                ::actors::gate::ActorConfig::declared::<Self>(#budget, #grants, #mailbox, #reply_timeout)
            }
        }

        impl ::actix::Actor for #actor {
            type Context = ::actix::Context<Self>;

            fn started(&mut self, ctx: &mut Self::Context) {
                ctx.set_mailbox_capacity(self.#gate.mailbox_capacity());
                #(self.#started(ctx);)*
            }
        }

        impl ::actix::Handler<::actors::gate::TopUp<#error>> for #actor {
            type Result = ::actors::gate::Reply<::actors::energy::Joules, #error>;

            fn handle(&mut self, msg: ::actors::gate::TopUp<#error>, _: &mut ::actix::Context<Self>) -> Self::Result {
                ::actors::gate::run(self, msg, |actor, msg| Ok(actor.#gate.top_up(msg.amount)))
            }
        }

        impl ::actix::Handler<::actors::gate::Status<#error>> for #actor {
            type Result = ::actors::gate::Reply<::actors::gate::GateStatus, #error>;

            fn handle(&mut self, msg: ::actors::gate::Status<#error>, _: &mut ::actix::Context<Self>) -> Self::Result {
                ::actors::gate::run(self, msg, |actor, _| Ok(actor.#gate.status()))
            }
        }
    })
}

/// A refusal of the gate's, as a variant of an actor's error enum and the `GateError` method that
/// builds it.
struct Refusal {
    name: &'static str,
    variant: Tokens,
    build: Tokens,
}

/// The refusals that carry a reason: variant, `GateError` method, documentation, message, and
/// whether every actor has it (the others only on request).
const REASONED: [(&str, &str, &str, &str, bool); 5] = [
    ("PermissionDenied", "permission_denied", "The requester or this actor lacks a capability the operation requires.", "permission denied: {0}", true),
    ("InvalidRequest", "invalid_request", "The request is malformed.", "invalid request: {0}", true),
    (
        "AuditUnavailable",
        "audit_unavailable",
        "The audit log cannot take entries now, so nothing is done unaudited.",
        "audit log unavailable: {0}",
        true,
    ),
    ("InvalidCapabilities", "invalid_capabilities", "The request presents or asks for capabilities that cannot be had.", "invalid capabilities: {0}", false),
    ("InvalidScope", "invalid_scope", "The request's scope, or the scope it asks for, does not cover the operation.", "invalid scope: {0}", false),
];

fn refusals(optional: &[String]) -> Vec<Refusal> {
    let mut all = vec![Refusal {
        name: "InsufficientEnergy",
        variant: quote! {
            /// The budget cannot cover the estimated cost.
            #[error("insufficient energy: needs {needed}, {available} available")]
            InsufficientEnergy {
                /// The estimated cost.
                needed: ::actors::energy::Joules,
                /// What the budget has.
                available: ::actors::energy::Joules,
            }
        },
        build: quote! {
            fn insufficient_energy(needed: ::actors::energy::Joules, available: ::actors::energy::Joules) -> Self {
                Self::InsufficientEnergy { needed, available }
            }
        },
    }];
    for (name, method, doc, message, always) in REASONED {
        if !always && !optional.iter().any(|o| o == name) {
            continue;
        }
        let (variant, method) = (Ident::new(name, Span::call_site()), Ident::new(method, Span::call_site()));
        all.push(Refusal {
            name,
            variant: quote! {
                #[doc = #doc]
                #[error(#message)]
                #variant(::std::string::String)
            },
            build: quote! {
                fn #method(reason: ::std::string::String) -> Self {
                    Self::#variant(reason)
                }
            },
        });
    }
    all
}

fn expand_gate_error(optional: Punctuated<Ident, Token![,]>, mut error: ItemEnum) -> syn::Result<Tokens> {
    if let Some(unknown) = optional.iter().find(|o| *o != "InvalidCapabilities" && *o != "InvalidScope") {
        return Err(Error::new(unknown.span(), "#[gate_error] may add InvalidCapabilities and InvalidScope"));
    }
    let optional: Vec<String> = optional.iter().map(Ident::to_string).collect();
    let refusals = refusals(&optional);
    let declared: Vec<String> = error.variants.iter().map(|v| v.ident.to_string()).collect();
    for refusal in &refusals {
        if !declared.iter().any(|d| d == refusal.name) {
            let variant = refusal.variant.clone();
            error.variants.push(syn::parse2(variant)?);
        }
    }
    let name = &error.ident;
    let builds = refusals.iter().map(|r| &r.build);
    let codes = error.variants.iter().map(|v| {
        let ident = &v.ident;
        let code = ident.to_string();
        quote!(Self::#ident { .. } => #code)
    });
    Ok(quote! {
        #error

        impl ::actors::gate::GateError for #name {
            #(#builds)*

            fn code(&self) -> &'static str {
                match self {
                    #(#codes,)*
                }
            }
        }

        impl ::core::convert::From<::actors::gate::Invalid> for #name {
            fn from(invalid: ::actors::gate::Invalid) -> Self {
                Self::InvalidRequest(invalid.0)
            }
        }
    })
}

//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the types that parse
//! each endpoint's parameters and shape its answer ([`crate::params`], [`crate::rest`],
//! [`crate::plausible`]), with utoipa's builders: a parameter or field added to those types
//! is documented by that change, and a test checks that the documented paths are the routed
//! ones.

use utoipa::openapi::path::{OperationBuilder, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, ObjectBuilder, OpenApi,
    OpenApiBuilder, PathItem, PathsBuilder, Ref, RefOr, Required, ResponseBuilder,
    SecurityRequirement,
};
use utoipa::{PartialSchema, ToSchema};

use crate::params::Endpoint;
use crate::plausible::{v1, v2};
use crate::{
    API_PATHS, ASK_PATH, GRAPHQL_PATH, LIVE_PATH, SHARE_LINK_PATH, SITE_PATH, V2_QUERY_PATH, rest,
};

/// The keys of a struct's schema: the fields a JSON request of that type may have.
pub fn property_names<T: ToSchema>() -> Vec<String> {
    match T::schema() {
        RefOr::T(Schema::Object(object)) => object.properties.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The schemas the document names, collected as operations refer to them.
#[derive(Default)]
struct Schemas(Vec<(String, RefOr<Schema>)>);

impl Schemas {
    /// `T`'s schema (and those it refers to) as a component; a reference to it.
    fn of<T: ToSchema>(&mut self) -> Ref {
        self.0.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.0);
        Ref::from_schema_name(T::name())
    }
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

/// An operation with the read key's security and the error answers every endpoint can give.
fn operation(
    summary: &str,
    parameters: Vec<Parameter>,
    ok: ResponseBuilder,
    error: &Ref,
) -> OperationBuilder {
    operation_answering("200", summary, parameters, ok, error)
}

/// As [`operation`], with another success status (`202` for accepted requests).
fn operation_answering(
    status: &str,
    summary: &str,
    parameters: Vec<Parameter>,
    ok: ResponseBuilder,
    error: &Ref,
) -> OperationBuilder {
    let error = |description: &str| json_response(description, error.clone());
    OperationBuilder::new()
        .summary(Some(summary))
        .parameters(Some(parameters))
        .security(SecurityRequirement::new("readKey", Vec::<String>::new()))
        .response(status, ok)
        .response("400", error("A parameter is invalid; the body names it."))
        .response("401", error("Missing or unknown read key."))
        .response("503", error("ClickHouse cannot answer now."))
}

fn path_parameter(name: &str, description: &str, schema: impl Into<RefOr<Schema>>) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// What each REST endpoint is, and its answer's schema.
fn rest_operation(endpoint: Endpoint, schemas: &mut Schemas, error: &Ref) -> OperationBuilder {
    let (summary, answer) = match endpoint {
        Endpoint::Overview => (
            "Visitors, persons, page views, events, sessions, bounce rate and average session \
             duration, with the previous range of the same length.",
            schemas.of::<rest::Overview>(),
        ),
        Endpoint::Timeseries => (
            "A metric per minute, hour or local day.",
            schemas.of::<rest::Timeseries>(),
        ),
        Endpoint::Top => (
            "The most viewed pages, the most frequent track events, or the visits' referrers \
             or campaign sources.",
            schemas.of::<rest::Top>(),
        ),
        Endpoint::Funnel => (
            "Persons who reached each step in order (by event time in ms) within the window, \
             those still in progress, exclusions, and an optional breakdown.",
            schemas.of::<rest::FunnelAnswer>(),
        ),
        Endpoint::Retention => (
            "Weekly retention: persons by the local week (from Monday) of their first activity \
             in the range, and how many were active in each later week.",
            schemas.of::<rest::Retention>(),
        ),
        Endpoint::PersonSessions => (
            "The most recent sessions of a person that started in the range, newest first.",
            schemas.of::<crate::PersonSessions>(),
        ),
        Endpoint::Progress => (
            "Complete up to: every event the gateway received before this instant is in every \
             number; and whether the engine is stalled on a lost log.",
            schemas.of::<crate::Progress>(),
        ),
    };
    let mut parameters = match endpoint {
        Endpoint::Top => vec![path_parameter(
            "kind",
            "What to list.",
            schemas.of::<rest::TopKind>(),
        )],
        Endpoint::PersonSessions => vec![path_parameter(
            "person_id",
            "The person's id, as the engine assigned it.",
            String::schema(),
        )],
        _ => Vec::new(),
    };
    parameters.extend(endpoint.parameters());
    let operation = operation(
        summary,
        parameters,
        json_response("The answer.", answer),
        error,
    );
    match endpoint {
        Endpoint::Top => operation.response("404", json_response("No such list.", error.clone())),
        _ => operation,
    }
}

/// The Plausible endpoints answer errors as Plausible does: `{"error": "<message>"}`.
fn plausible_error() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property("error", ObjectBuilder::new().schema_type(Type::String))
        .required("error")
        .into()
}

fn v1_summary(endpoint: v1::Endpoint) -> &'static str {
    match endpoint {
        v1::Endpoint::Aggregate => "Plausible's Stats API v1: totals, with `change` on compare.",
        v1::Endpoint::Timeseries => "Plausible's Stats API v1: one row per bucket, zero-filled.",
        v1::Endpoint::Breakdown => "Plausible's Stats API v1: rows keyed by the property.",
        v1::Endpoint::Realtime => {
            "Plausible's Stats API v1: visitors in the last 5 minutes, a bare integer."
        }
    }
}

/// The document.
pub fn document() -> OpenApi {
    let mut schemas = Schemas::default();
    let error = schemas.of::<crate::error::ErrorBody>();
    let mut paths = PathsBuilder::new();
    for (path, endpoint) in API_PATHS.into_iter().zip(Endpoint::ALL) {
        let operation = rest_operation(endpoint, &mut schemas, &error);
        paths = paths.path(path, PathItem::new(HttpMethod::Get, operation));
    }
    let live = operation(
        "Server-Sent Events of the tenant's live counters (event `counters`, id = engine \
         epoch). Browsers' EventSource cannot send headers: the read key may come as `key`.",
        vec![
            ParameterBuilder::new()
                .name("key")
                .parameter_in(ParameterIn::Query)
                .description(Some("The read key, instead of the Authorization header."))
                .schema(Some(String::schema()))
                .build(),
            ParameterBuilder::new()
                .name("Last-Event-ID")
                .parameter_in(ParameterIn::Header)
                .description(Some(
                    "The last epoch received: the current counters come at once only if newer.",
                ))
                .schema(Some(u64::schema()))
                .build(),
        ],
        ResponseBuilder::new()
            .description("An event stream; a reconnect with Last-Event-ID resumes.")
            .content(
                "text/event-stream",
                ContentBuilder::new().schema(Some(String::schema())).build(),
            ),
        &error,
    );
    paths = paths.path(LIVE_PATH, PathItem::new(HttpMethod::Get, live));
    let ask_body = schemas.of::<crate::AskRequest>();
    let ask = operation(
        "Ask in plain English: the question becomes a typed query of the query model (the \
         offline translator, or the configured model), run through the dashboard's own doors; \
         a model may fall back to SQL over the caller's tenant only, checked by the SQL guard \
         and run read-only with limits. Read keys only (a share key gets 403).",
        Vec::new(),
        json_response("The answer.", schemas.of::<crate::ask::answer::Answer>()),
        &error,
    )
    .response(
        "429",
        json_response(
            "The tenant's question budget is spent; Retry-After says when to ask again.",
            error.clone(),
        ),
    )
    .request_body(Some(json_body(ask_body)));
    paths = paths.path(ASK_PATH, PathItem::new(HttpMethod::Post, ask));
    let share = operation(
        "The tenant's read-only share link: a key that opens its dashboard and aggregate \
         numbers only. Read keys only; 404 when the tenant has no share key.",
        Vec::new(),
        json_response("The link.", schemas.of::<crate::ShareLink>()),
        &error,
    )
    .response("403", json_response("A share key asked.", error.clone()))
    .response(
        "404",
        json_response("No share key configured.", error.clone()),
    );
    paths = paths.path(SHARE_LINK_PATH, PathItem::new(HttpMethod::Get, share));
    let site = operation(
        "The key's site: its id (the Stats API's site_id), time zone, goals, and whether the \
         key is a read or a share key.",
        Vec::new(),
        json_response("The site.", schemas.of::<crate::Site>()),
        &error,
    );
    paths = paths.path(SITE_PATH, PathItem::new(HttpMethod::Get, site));
    let graphql_body = schemas.of::<crate::GraphQLBody>();
    let graphql = operation(
        "GraphQL over the query model: `stats(input: {metrics, dateRange, dimensions, filters, \
         …})` runs what POST /api/v2/query runs and gives the same numbers; `site`. \
         Introspection is on (the schema is its own documentation); errors are in the \
         GraphQL response's `errors`, with status 200.",
        Vec::new(),
        json_response(
            "The GraphQL response (`data`, `errors`).",
            ObjectBuilder::new().schema_type(SchemaType::AnyValue),
        ),
        &error,
    )
    .request_body(Some(json_body(graphql_body)));
    paths = paths.path(GRAPHQL_PATH, PathItem::new(HttpMethod::Post, graphql));
    paths = admin_paths(paths, &mut schemas, &error);
    let v2_body = schemas.of::<v2::QueryRequest>();
    let v2 = plausible_operation(
        "Plausible's Stats API v2 over the query model.",
        Vec::new(),
        json_response("The answer.", schemas.of::<v2::QueryResponse>()),
    )
    .request_body(Some(json_body(v2_body)));
    paths = paths.path(V2_QUERY_PATH, PathItem::new(HttpMethod::Post, v2));
    for (path, endpoint) in v1::ENDPOINTS {
        let ok = json_response(
            "The answer, in Plausible's v1 shape.",
            ObjectBuilder::new().schema_type(SchemaType::AnyValue),
        );
        let operation = plausible_operation(v1_summary(endpoint), endpoint.parameters(), ok);
        paths = paths.path(path, PathItem::new(HttpMethod::Get, operation));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("clickstream query API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Read-only analytics of one tenant, chosen by the read key \
                     (Authorization: Bearer <read key>). Times are Unix seconds or RFC 3339; \
                     ranges are [from, to), default the last 24 hours.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas.0)
                .security_scheme(
                    "readKey",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .build(),
        ))
        .build()
}

/// Erasure, suppression and export: admin keys only (other keys of the tenant get 403).
fn admin_paths(mut paths: PathsBuilder, schemas: &mut Schemas, error: &Ref) -> PathsBuilder {
    let id = || {
        path_parameter(
            "id",
            "Any id of the person (anonymous or user id).",
            String::schema(),
        )
    };
    let forbidden = || json_response("Not an admin key.", error.clone());
    let deletion = schemas.of::<crate::erasure::Deletion>();
    let erase = operation_answering(
        "202",
        "Erases the person the id belongs to, with every id linked to it: the engine drops \
         their events (and suppresses later ones), corrects every aggregate and deletes their \
         rows; Ask's log and cache are cleared at once. 202 with the pending request.",
        vec![id()],
        json_response(
            "Accepted; poll /api/deletions/{request_id}.",
            deletion.clone(),
        ),
        error,
    )
    .response("403", forbidden());
    paths = paths.path(crate::PERSON_PATH, PathItem::new(HttpMethod::Delete, erase));
    let export = operation(
        "Everything stored about the person the id belongs to (GDPR Art. 15): ids, \
         identities, traits, events and sessions with every stored column.",
        vec![id()],
        json_response(
            "The person's data.",
            ObjectBuilder::new().schema_type(SchemaType::AnyValue),
        ),
        error,
    )
    .response("403", forbidden());
    paths = paths.path(
        crate::PERSON_EXPORT_PATH,
        PathItem::new(HttpMethod::Get, export),
    );
    let status = operation(
        "An erasure request: pending or completed, when, and the rows removed per table.",
        vec![path_parameter(
            "request_id",
            "The request's id.",
            String::schema(),
        )],
        json_response("The request.", deletion),
        error,
    )
    .response("403", forbidden())
    .response(
        "404",
        json_response("No such request of this tenant.", error.clone()),
    );
    paths = paths.path(crate::DELETION_PATH, PathItem::new(HttpMethod::Get, status));
    let audit = operation(
        "The tenant's erasure requests, newest first, with the requesting key's id.",
        Vec::new(),
        json_response(
            "The requests.",
            utoipa::openapi::schema::ArrayBuilder::new()
                .items(schemas.of::<crate::erasure::AuditEntry>()),
        ),
        error,
    )
    .response("403", forbidden());
    paths = paths.path(crate::DELETIONS_PATH, PathItem::new(HttpMethod::Get, audit));
    let lift = operation_answering(
        "202",
        "Lifts the suppression of an erased id: its events received from `lifted_at` (30 s \
         from now) are kept again; what was erased stays erased. 202.",
        vec![id()],
        json_response("Accepted.", schemas.of::<crate::SuppressionLifted>()),
        error,
    )
    .response("403", forbidden());
    paths.path(
        crate::SUPPRESSION_PATH,
        PathItem::new(HttpMethod::Delete, lift),
    )
}

fn json_body(schema: Ref) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(schema)).build(),
        )
        .build()
}

/// A Plausible endpoint: the read key as Plausible's API key, Plausible's error shape.
fn plausible_operation(
    summary: &str,
    parameters: Vec<Parameter>,
    ok: ResponseBuilder,
) -> OperationBuilder {
    let error = |description: &str| json_response(description, plausible_error());
    OperationBuilder::new()
        .summary(Some(summary))
        .parameters(Some(parameters))
        .security(SecurityRequirement::new("readKey", Vec::<String>::new()))
        .response("200", ok)
        .response(
            "400",
            error("The request is invalid; the message names the field."),
        )
        .response(
            "401",
            error("Missing or unknown key, or a site_id of another tenant."),
        )
}

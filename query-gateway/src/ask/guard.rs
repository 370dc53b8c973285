//! The SQL guard: the security boundary between a (possibly hostile) model and ClickHouse.
//!
//! It trusts nothing about where the SQL came from; the model's and the offline translator's
//! SQL pass through it alike. The rules, and the ClickHouse 18.16 facts behind them (see
//! `ARCHITECTURE.md`, Query gateway):
//! - The text is bounded (length, parenthesis depth, no control characters) *before* any
//!   parser sees it: about 2,000 nested parentheses crash ClickHouse's own parser.
//! - It must parse (sqlparser, ClickHouse dialect) as exactly one `SELECT`: no `WITH`,
//!   `SETTINGS`, `FORMAT`, `INTO`, `ARRAY JOIN`, window functions or lambdas, at most one
//!   `JOIN` per `SELECT`, only `UNION ALL`.
//! - Relations are the views of [`super::views`] by bare name (no database, no table
//!   functions, no `system.*`); functions come from an allow-list; values are plain numbers
//!   and strings without backslashes.
//! - An alias named like a view column is refused: in ClickHouse it would shadow that column
//!   (`'x' AS tenant`).
//! - The tenant filter is imposed by replacing each view reference with a subquery of the
//!   tenant's rows, never by appending to the model's `WHERE`.
//! - What runs is re-rendered from the checked AST, never the model's text: ClickHouse and
//!   sqlparser disagree on nested comments and backslash escapes, and a comment cannot hide
//!   anything in a rendering that has none.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, JoinConstraint, JoinOperator, LimitClause, ObjectName, Query, Select, SelectItem,
    SetExpr, SetOperator, SetQuantifier, Statement, TableAlias, TableFactor, UnaryOperator, Value,
    Visit, VisitMut, Visitor, VisitorMut,
};
use sqlparser::dialect::ClickHouseDialect;
use sqlparser::parser::Parser;

use super::views::{self, View};

/// Longest SQL text accepted, bytes.
pub const MAX_SQL_BYTES: usize = 8 * 1024;
/// Deepest parenthesis nesting accepted in the text.
pub const MAX_PAREN_DEPTH: usize = 24;
/// Deepest expression nesting accepted in the AST (a long `a + b + ...` chain nests without
/// parentheses).
pub const MAX_EXPR_DEPTH: usize = 48;
/// Deepest query nesting (subqueries in subqueries).
pub const MAX_QUERY_DEPTH: usize = 4;
/// Most rows an answer returns; the outer `LIMIT` is lowered to this.
pub const MAX_ROWS: u64 = 1000;

/// Marks a view reference in the rendering until the tenant's subquery replaces it; no
/// identifier or string the guard accepts may contain it.
const PLACEHOLDER: &str = "__clickstream_view_";

/// Functions a question may need, as ClickHouse spells them (the prompt lists them). ClickHouse
/// resolves most names case-sensitively and some (`count`, `sum`, ...) case-insensitively;
/// comparing in lowercase accepts both spellings of an allowed function and can only refuse,
/// never admit, another.
pub const FUNCTIONS: &[&str] = &[
    // aggregates
    "count",
    "countIf",
    "sum",
    "sumIf",
    "avg",
    "avgIf",
    "min",
    "minIf",
    "max",
    "maxIf",
    "uniq",
    "uniqIf",
    "uniqExact",
    "uniqExactIf",
    "any",
    "anyLast",
    "argMin",
    "argMax",
    "groupUniqArray",
    "quantile",
    "quantileExact",
    "median",
    "windowFunnel",
    "retention",
    // conditionals and nulls
    "if",
    "multiIf",
    "coalesce",
    "ifNull",
    "nullIf",
    "isNull",
    "isNotNull",
    // arithmetic
    "round",
    "abs",
    "intDiv",
    "modulo",
    "least",
    "greatest",
    "plus",
    "minus",
    "multiply",
    "divide",
    // dates and times
    "now",
    "today",
    "yesterday",
    "toDate",
    "toDateTime",
    "toStartOfMinute",
    "toStartOfFiveMinute",
    "toStartOfFifteenMinutes",
    "toStartOfHour",
    "toStartOfDay",
    "toMonday",
    "toStartOfMonth",
    "toStartOfQuarter",
    "toStartOfYear",
    "toYear",
    "toMonth",
    "toDayOfMonth",
    "toDayOfWeek",
    "toHour",
    "toMinute",
    "toYYYYMM",
    "toYYYYMMDD",
    "toRelativeDayNum",
    "toRelativeWeekNum",
    "toUnixTimestamp",
    "toTimeZone",
    "formatDateTime",
    "addDays",
    "subtractDays",
    "addHours",
    "subtractHours",
    "addWeeks",
    "subtractWeeks",
    "addMonths",
    "subtractMonths",
    // conversions
    "toString",
    "toUInt8",
    "toUInt32",
    "toUInt64",
    "toInt64",
    "toFloat64",
    // strings and URLs
    "lower",
    "upper",
    "length",
    "lengthUTF8",
    "empty",
    "notEmpty",
    "concat",
    "position",
    "positionCaseInsensitive",
    "startsWith",
    "endsWith",
    "like",
    "notLike",
    "domain",
    "domainWithoutWWW",
    "protocol",
    "cutQueryString",
    "extractURLParameter",
    // arrays of a row's own values
    "has",
];

/// Why the guard refused a statement; `Display` names the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

/// A statement the guard accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The re-rendered statement over the views, as the answer shows it.
    pub shown: String,
    /// What runs: the same rendering with each view replaced by the tenant's subquery.
    pub executable: String,
}

/// Checks `text` and, when it passes, renders it for `tenant`'s rows of `database`.
///
/// # Errors
/// A [`Refusal`] naming the first rule the statement breaks.
pub fn check(text: &str, database: &str, tenant: &str) -> Result<Checked, Refusal> {
    bound_text(text)?;
    let dialect = ClickHouseDialect {};
    let mut statements = Parser::new(&dialect)
        .with_recursion_limit(MAX_EXPR_DEPTH * 2)
        .try_with_sql(text)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|error| Refusal(format!("not valid SQL: {error}")))?;
    if statements.len() != 1 {
        return refuse(format!(
            "exactly one statement is allowed, found {}",
            statements.len()
        ));
    }
    let Some(Statement::Query(mut query)) = statements.pop() else {
        return refuse("only a SELECT statement is allowed");
    };
    let mut checker = Checker::default();
    if let ControlFlow::Break(refusal) = Visit::visit(query.as_ref(), &mut checker) {
        return Err(refusal);
    }
    cap_limit(&mut query)?;
    let shown = query.to_string();
    // Backstops, whatever part of the AST a rule above may have missed: ClickHouse and
    // sqlparser read the same tokens as long as there is no backslash (ClickHouse's escape
    // character in strings and quoted names), and only the gateway writes placeholders.
    if shown.contains('\\') {
        return refuse("a backslash is not allowed anywhere in the statement");
    }
    if shown.to_ascii_lowercase().contains(PLACEHOLDER) {
        return refuse("the statement uses a reserved name");
    }
    let _ = VisitMut::visit(query.as_mut(), &mut Placeholders);
    let mut executable = query.to_string();
    for view in views::VIEWS.iter() {
        executable =
            executable.replace(&placeholder(view), &view.scoped_subquery(database, tenant));
    }
    Ok(Checked { shown, executable })
}

/// `__clickstream_view_events__`: the closing underscores keep one view's placeholder from
/// being a prefix of another's.
fn placeholder(view: &View) -> String {
    format!("{PLACEHOLDER}{}__", view.name)
}

fn bound_text(text: &str) -> Result<(), Refusal> {
    if text.len() > MAX_SQL_BYTES {
        return refuse(format!(
            "the statement is {} bytes; at most {MAX_SQL_BYTES} are allowed",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        return refuse(format!(
            "control character U+{:04X} in the statement",
            c as u32
        ));
    }
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' => {
                depth += 1;
                if depth > MAX_PAREN_DEPTH {
                    return refuse(format!(
                        "brackets nest deeper than {MAX_PAREN_DEPTH} levels"
                    ));
                }
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The outer query returns at most [`MAX_ROWS`] rows: no `LIMIT` gets one, a larger one is
/// lowered.
fn cap_limit(query: &mut Query) -> Result<(), Refusal> {
    let cap = Expr::value(Value::Number(MAX_ROWS.to_string(), false));
    match &mut query.limit_clause {
        None => {
            query.limit_clause = Some(LimitClause::LimitOffset {
                limit: Some(cap),
                offset: None,
                limit_by: Vec::new(),
            });
        }
        Some(LimitClause::LimitOffset { limit, .. }) => {
            let within = limit
                .as_ref()
                .and_then(number)
                .is_some_and(|n| n <= MAX_ROWS as f64);
            if !within {
                *limit = Some(cap);
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => {
            return refuse("write LIMIT n OFFSET m, not LIMIT m, n");
        }
    }
    Ok(())
}

fn number(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) => text.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Walks every query and expression of the statement (sqlparser's visitor reaches each one,
/// however deeply nested) and breaks with the first refusal.
#[derive(Debug, Default)]
struct Checker {
    query_depth: usize,
    expr_depth: usize,
}

impl Visitor for Checker {
    type Break = Refusal;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Refusal> {
        self.query_depth += 1;
        if self.query_depth > MAX_QUERY_DEPTH {
            return ControlFlow::Break(Refusal(format!(
                "subqueries nest deeper than {MAX_QUERY_DEPTH} levels"
            )));
        }
        into_flow(check_query(query))
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Refusal> {
        self.query_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Refusal> {
        into_flow(check_table_factor(factor))
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Refusal> {
        self.expr_depth += 1;
        if self.expr_depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(Refusal(format!(
                "expressions nest deeper than {MAX_EXPR_DEPTH} levels"
            )));
        }
        into_flow(check_expr(expr))
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Refusal> {
        self.expr_depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &Value) -> ControlFlow<Refusal> {
        into_flow(check_value(value))
    }
}

fn into_flow(result: Result<(), Refusal>) -> ControlFlow<Refusal> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(refusal) => ControlFlow::Break(refusal),
    }
}

/// Renames each view reference to its placeholder, keeping the name the query uses for it as
/// the alias, so `events.path` still resolves after the subquery replaces it.
struct Placeholders;

impl VisitorMut for Placeholders {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor
            && let Some(view) = single_ident(name).and_then(|ident| View::named(&ident.value))
        {
            if alias.is_none() {
                *alias = Some(TableAlias {
                    name: Ident::new(view.name),
                    columns: Vec::new(),
                });
            }
            *name = ObjectName::from(vec![Ident::new(placeholder(view))]);
        }
        ControlFlow::Continue(())
    }
}

fn check_query(query: &Query) -> Result<(), Refusal> {
    let Query {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = query;
    if with.is_some() {
        return refuse("WITH is not allowed: select from the views directly");
    }
    if settings.is_some() {
        return refuse("SETTINGS is not allowed");
    }
    if format_clause.is_some() {
        return refuse("FORMAT is not allowed");
    }
    if fetch.is_some() || !locks.is_empty() || for_clause.is_some() || !pipe_operators.is_empty() {
        return refuse("FETCH, FOR and pipe clauses are not allowed");
    }
    if let Some(order_by) = order_by
        && order_by.interpolate.is_some()
    {
        return refuse("INTERPOLATE is not allowed");
    }
    if let Some(order_by) = order_by
        && let sqlparser::ast::OrderByKind::Expressions(exprs) = &order_by.kind
        && exprs.iter().any(|e| e.with_fill.is_some())
    {
        return refuse("WITH FILL is not allowed");
    }
    if let Some(LimitClause::LimitOffset { limit_by, .. }) = limit_clause
        && !limit_by.is_empty()
    {
        return refuse("LIMIT BY is not allowed");
    }
    if let Some(LimitClause::LimitOffset { limit, offset, .. }) = limit_clause {
        let literal = |e: &Expr| number(e).is_some();
        if !limit.as_ref().is_none_or(literal) || !offset.as_ref().is_none_or(|o| literal(&o.value))
        {
            return refuse("LIMIT and OFFSET must be numbers");
        }
    }
    check_set_expr(body)
}

fn check_set_expr(body: &SetExpr) -> Result<(), Refusal> {
    match body {
        SetExpr::Select(select) => check_select(select),
        SetExpr::Query(_) => Ok(()), // visited as a query of its own
        SetExpr::SetOperation {
            op,
            set_quantifier,
            left,
            right,
        } => {
            if *op != SetOperator::Union || *set_quantifier != SetQuantifier::All {
                return refuse(format!(
                    "only UNION ALL combines queries, not {op} {set_quantifier}"
                ));
            }
            check_set_expr(left)?;
            check_set_expr(right)
        }
        _ => refuse("only SELECT is allowed"),
    }
}

fn check_select(select: &Select) -> Result<(), Refusal> {
    let Select {
        select_token: _,
        distinct,
        top,
        top_before_distinct: _,
        projection,
        exclude,
        into,
        from,
        lateral_views,
        prewhere,
        selection: _,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having: _,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        connect_by,
        flavor,
    } = select;
    if into.is_some() {
        return refuse("SELECT INTO is not allowed");
    }
    if matches!(distinct, Some(sqlparser::ast::Distinct::On(_))) {
        return refuse("DISTINCT ON is not allowed");
    }
    if top.is_some()
        || exclude.is_some()
        || !lateral_views.is_empty()
        || prewhere.is_some()
        || !cluster_by.is_empty()
        || !distribute_by.is_empty()
        || !sort_by.is_empty()
        || !named_window.is_empty()
        || qualify.is_some()
        || value_table_mode.is_some()
        || connect_by.is_some()
        || *flavor != sqlparser::ast::SelectFlavor::Standard
    {
        return refuse(
            "only SELECT, FROM, JOIN, WHERE, GROUP BY, HAVING, ORDER BY and LIMIT are allowed",
        );
    }
    for item in projection {
        match item {
            SelectItem::UnnamedExpr(_) => {}
            SelectItem::ExprWithAlias { alias, .. } => check_alias(alias)?,
            SelectItem::Wildcard(options) => check_wildcard(options)?,
            SelectItem::QualifiedWildcard(kind, options) => {
                match kind {
                    sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(name) => {
                        let Some(qualifier) = single_ident(name) else {
                            return refuse("only `*` or `alias.*` may select every column");
                        };
                        check_ident_text(qualifier)?;
                    }
                    _ => return refuse("only `*` or `alias.*` may select every column"),
                }
                check_wildcard(options)?;
            }
        }
    }
    if from.is_empty() {
        return refuse("a SELECT must read from one of the views (events, sessions)");
    }
    if from.len() > 1 || from.iter().any(|table| table.joins.len() > 1) {
        return refuse("at most one JOIN per SELECT (ClickHouse 18.16)");
    }
    for join in from.iter().flat_map(|table| &table.joins) {
        check_join(join)?;
    }
    match group_by {
        GroupByExpr::Expressions(_, modifiers) if modifiers.is_empty() => Ok(()),
        _ => refuse("GROUP BY takes expressions only (no ALL, ROLLUP, CUBE or TOTALS)"),
    }
}

fn check_wildcard(options: &sqlparser::ast::WildcardAdditionalOptions) -> Result<(), Refusal> {
    if options.opt_ilike.is_some()
        || options.opt_exclude.is_some()
        || options.opt_except.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
    {
        return refuse("`*` takes no modifiers");
    }
    Ok(())
}

fn check_join(join: &sqlparser::ast::Join) -> Result<(), Refusal> {
    if join.global {
        return refuse("GLOBAL JOIN is not allowed");
    }
    let constraint = match &join.join_operator {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c) => c,
        other => {
            return refuse(format!(
                "only INNER and LEFT JOIN are allowed, not {other:?}"
            ));
        }
    };
    match constraint {
        JoinConstraint::On(_) => Ok(()),
        JoinConstraint::Using(columns) => columns.iter().try_for_each(|column| {
            single_ident(column)
                .ok_or_else(|| Refusal("USING takes column names".into()))
                .and_then(check_ident)
        }),
        _ => refuse("a JOIN needs ON or USING"),
    }
}

fn check_table_factor(factor: &TableFactor) -> Result<(), Refusal> {
    match factor {
        TableFactor::Table {
            name,
            alias,
            args,
            with_hints,
            version,
            with_ordinality,
            partitions,
            json_path,
            sample,
            index_hints,
        } => {
            if args.is_some() {
                return refuse(format!("table function {name} is not allowed"));
            }
            if !with_hints.is_empty()
                || version.is_some()
                || *with_ordinality
                || !partitions.is_empty()
                || json_path.is_some()
                || sample.is_some()
                || !index_hints.is_empty()
            {
                return refuse(format!("{name} takes no modifiers"));
            }
            let view = single_ident(name).and_then(|ident| View::named(&ident.value));
            if view.is_none() {
                return refuse(format!(
                    "{name} is not one of the views Ask can read ({})",
                    view_names()
                ));
            }
            if let Some(alias) = alias {
                check_table_alias(alias, view.map(|v| v.name))?;
            }
            Ok(())
        }
        TableFactor::Derived { lateral, alias, .. } => {
            if *lateral {
                return refuse("LATERAL is not allowed");
            }
            if let Some(alias) = alias {
                check_table_alias(alias, None)?;
            }
            Ok(())
        }
        _ => refuse("FROM takes a view or a subquery"),
    }
}

fn view_names() -> String {
    let names: Vec<&str> = views::VIEWS.iter().map(|view| view.name).collect();
    names.join(", ")
}

fn check_table_alias(alias: &TableAlias, view: Option<&str>) -> Result<(), Refusal> {
    if !alias.columns.is_empty() {
        return refuse("a table alias cannot rename columns");
    }
    if view.is_some_and(|view| alias.name.value == view) {
        return Ok(());
    }
    check_alias(&alias.name)
}

/// An alias must be an identifier of its own: in ClickHouse an alias named like a column
/// shadows that column wherever the name appears in the same SELECT.
fn check_alias(alias: &Ident) -> Result<(), Refusal> {
    if views::is_view_column(&alias.value) || views::is_hidden_column(&alias.value) {
        return refuse(format!(
            "alias {} has the name of a column; choose another name",
            alias.value
        ));
    }
    if View::named(&alias.value).is_some() {
        return refuse(format!("alias {} has the name of a view", alias.value));
    }
    check_ident_text(alias)
}

/// Identifiers are ASCII words (spaces allowed inside quotes): no look-alike letters, no
/// quote characters to escape, nothing that could spell the placeholder.
fn check_ident_text(ident: &Ident) -> Result<(), Refusal> {
    if !matches!(ident.quote_style, None | Some('"') | Some('`')) {
        return refuse("identifiers are bare, \"double-quoted\" or `backquoted`");
    }
    let valid = !ident.value.is_empty()
        && ident.value.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || (c == ' ' && ident.quote_style.is_some())
        });
    if !valid {
        return refuse(format!(
            "identifier {:?} may use only ASCII letters, digits and underscores",
            ident.value
        ));
    }
    if ident.value.to_ascii_lowercase().contains(PLACEHOLDER) {
        return refuse("identifier uses a reserved name");
    }
    Ok(())
}

/// A column reference: a valid identifier, and not one of the columns the gateway owns (it
/// would fail in ClickHouse anyway; this says why).
fn check_ident(ident: &Ident) -> Result<(), Refusal> {
    check_ident_text(ident)?;
    if views::is_hidden_column(&ident.value) {
        return refuse(format!(
            "column {} is not available: the gateway scopes every view to your tenant",
            ident.value
        ));
    }
    Ok(())
}

fn single_ident(name: &ObjectName) -> Option<&Ident> {
    match name.0.as_slice() {
        [part] => part.as_ident(),
        _ => None,
    }
}

fn check_value(value: &Value) -> Result<(), Refusal> {
    match value {
        Value::Number(..) | Value::Boolean(_) | Value::Null => Ok(()),
        Value::SingleQuotedString(text) => {
            if text.contains('\\') {
                return refuse("a string may not contain a backslash");
            }
            if text.to_ascii_lowercase().contains(PLACEHOLDER) {
                return refuse("a string uses a reserved name");
            }
            Ok(())
        }
        other => refuse(format!(
            "literal {other} is not allowed; use 'single quotes'"
        )),
    }
}

fn check_expr(expr: &Expr) -> Result<(), Refusal> {
    match expr {
        Expr::Identifier(ident) => check_ident(ident),
        Expr::CompoundIdentifier(parts) => {
            if parts.len() != 2 {
                return refuse("write columns as column or table.column");
            }
            parts.iter().try_for_each(check_ident)
        }
        Expr::Function(function) => check_function(function),
        Expr::BinaryOp { op, .. } => check_binary_operator(op),
        Expr::UnaryOp { op, .. } => match op {
            UnaryOperator::Not | UnaryOperator::Minus | UnaryOperator::Plus => Ok(()),
            other => refuse(format!("operator {other} is not allowed")),
        },
        Expr::Like {
            any, escape_char, ..
        }
        | Expr::ILike {
            any, escape_char, ..
        } => {
            if *any || escape_char.is_some() {
                return refuse("LIKE ANY and ESCAPE are not allowed");
            }
            Ok(())
        }
        // ClickHouse reads a lone name in `IN (name)` as a table to read.
        Expr::InList { list, .. } => {
            if list.iter().all(is_literal) {
                Ok(())
            } else {
                refuse("IN takes a list of literal values or a subquery")
            }
        }
        Expr::InSubquery { .. }
        | Expr::Subquery(_)
        | Expr::Nested(_)
        | Expr::Value(_)
        | Expr::Between { .. }
        | Expr::IsNull(_)
        | Expr::IsNotNull(_)
        | Expr::Case { .. }
        | Expr::Tuple(_) => Ok(()),
        Expr::Interval(interval) => {
            if interval.leading_precision.is_some()
                || interval.last_field.is_some()
                || interval.fractional_seconds_precision.is_some()
            {
                return refuse("write intervals as INTERVAL n UNIT");
            }
            Ok(())
        }
        Expr::Cast { .. } => refuse(
            "CAST is not allowed; use toString, toUInt64, toInt64, toFloat64, toDate or toDateTime",
        ),
        Expr::Lambda(_) => refuse("lambda functions are not allowed"),
        other => refuse(format!("this kind of expression is not allowed: {other}")),
    }
}

/// A number, string, boolean or NULL, possibly negated, parenthesized or in a tuple.
fn is_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_) => true,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        }
        | Expr::Nested(expr) => is_literal(expr),
        Expr::Tuple(items) => items.iter().all(is_literal),
        _ => false,
    }
}

fn check_binary_operator(op: &BinaryOperator) -> Result<(), Refusal> {
    use BinaryOperator as B;
    match op {
        B::Plus
        | B::Minus
        | B::Multiply
        | B::Divide
        | B::Modulo
        | B::Gt
        | B::Lt
        | B::GtEq
        | B::LtEq
        | B::Eq
        | B::NotEq
        | B::And
        | B::Or => Ok(()),
        other => refuse(format!("operator {other} is not allowed")),
    }
}

fn check_function(function: &Function) -> Result<(), Refusal> {
    let Some(name) = single_ident(&function.name) else {
        return refuse(format!("function {} is not allowed", function.name));
    };
    if !FUNCTIONS
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(&name.value))
    {
        return refuse(format!("function {} is not allowed", name.value));
    }
    if function.over.is_some() {
        return refuse("window functions are not allowed (ClickHouse 18.16 has none)");
    }
    if function.filter.is_some()
        || function.null_treatment.is_some()
        || !function.within_group.is_empty()
        || function.uses_odbc_syntax
    {
        return refuse(format!("{} takes plain arguments only", name.value));
    }
    for arguments in [&function.parameters, &function.args] {
        match arguments {
            FunctionArguments::None => {}
            FunctionArguments::Subquery(_) => {
                return refuse(format!("{} cannot take a subquery", name.value));
            }
            FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return refuse(format!("{} takes plain arguments only", name.value));
                }
                for argument in &list.args {
                    match argument {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(_))
                        | FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => {}
                        _ => {
                            return refuse(format!("{} takes plain arguments only", name.value));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(sql: &str) -> Checked {
        check(sql, "db", "acme").unwrap_or_else(|refusal| panic!("{sql}: refused: {refusal}"))
    }

    fn refused(sql: &str) -> String {
        match check(sql, "db", "acme") {
            Ok(checked) => panic!("{sql}: accepted as {}", checked.executable),
            Err(Refusal(reason)) => reason,
        }
    }

    #[test]
    fn a_plain_question_runs_over_the_tenants_rows() {
        let checked = accepted(
            "SELECT path, count() AS views FROM events GROUP BY path ORDER BY views DESC LIMIT 10",
        );
        assert_eq!(
            checked.shown,
            "SELECT path, count() AS views FROM events GROUP BY path ORDER BY views DESC LIMIT 10"
        );
        assert!(
            checked
                .executable
                .starts_with("SELECT path, count() AS views FROM (SELECT message_id, "),
            "{}",
            checked.executable
        );
        assert!(checked.executable.contains(
            "FROM db.events FINAL WHERE tenant = 'acme' AND late = 0 AND is_bot = 0 \
             AND non_interactive = 0) AS events GROUP BY"
        ));
    }

    #[test]
    fn the_limit_is_imposed_and_lowered() {
        assert!(
            accepted("SELECT count() FROM sessions")
                .shown
                .ends_with("LIMIT 1000")
        );
        assert!(
            accepted("SELECT path FROM events LIMIT 100000")
                .shown
                .ends_with("LIMIT 1000")
        );
        assert!(
            accepted("SELECT path FROM events LIMIT 5")
                .shown
                .ends_with("LIMIT 5")
        );
    }

    #[test]
    fn aliases_views_and_subqueries_are_scoped() {
        let checked = accepted(
            "SELECT e.path FROM events AS e WHERE e.person_id IN (SELECT person_id FROM sessions WHERE is_bounce = 1)",
        );
        assert_eq!(checked.executable.matches("tenant = 'acme'").count(), 2);
        assert!(!checked.executable.contains(PLACEHOLDER));
    }

    #[test]
    fn every_rule_names_its_reason() {
        for (sql, reason) in [
            ("SELECT 'x' AS tenant, count() FROM events", "alias tenant"),
            (
                "SELECT count() FROM events WHERE tenant = 'globex'",
                "column tenant",
            ),
            ("SELECT path AS referrer FROM events", "alias referrer"),
            ("SELECT * FROM system.tables", "not one of the views"),
            ("SELECT * FROM db.events", "not one of the views"),
            ("SELECT * FROM numbers(10)", "table function"),
            ("SELECT 1; SELECT 2", "exactly one statement"),
            ("DROP TABLE events", "only a SELECT"),
            ("SELECT 1 FROM events SETTINGS readonly = 0", "SETTINGS"),
            ("SELECT 1 FROM events FORMAT TabSeparated", "FORMAT"),
            ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH"),
            ("SELECT file('/etc/passwd') FROM events", "function file"),
            ("SELECT 'a\\\\b' FROM events", "backslash"),
            (
                "SELECT path FROM events UNION DISTINCT SELECT path FROM events",
                "UNION ALL",
            ),
            ("SELECT count() FROM еvents", "not valid SQL"),
            ("SELECT count() FROM events WHERE `pаth` = 1", "identifier"),
            ("SELECT 1", "must read from"),
            ("SELECT path FROM events WHERE path IN (events)", "IN takes"),
            (
                "SELECT path FROM events WHERE (path, 1) IN (system.one)",
                "IN takes",
            ),
            ("SELECT path FROM events LIMIT 1 BY path", "LIMIT BY"),
            (
                r"SELECT 'a\\'.*, `' AS s, path FROM events WHERE 1 --`.* FROM events",
                "",
            ),
            (r"SELECT `x\\`.* FROM events", ""),
            (
                "SELECT s.path FROM events AS s JOIN events AS t USING (`p\\`)",
                "",
            ),
            ("SELECT `__clickstream_view_events__`.* FROM events", ""),
        ] {
            let refusal = refused(sql);
            assert!(refusal.contains(reason), "{sql}: {refusal}");
        }
        // An escaped quote is re-rendered in the form both parsers read alike.
        assert!(
            accepted("SELECT 'a\\'' AS q FROM events")
                .shown
                .starts_with("SELECT 'a''' AS q")
        );
        let deep = format!("SELECT {}1{} FROM events", "(".repeat(100), ")".repeat(100));
        assert!(refused(&deep).contains("nest deeper"));
        let long_chain = format!("SELECT 1{} FROM events", " + 1".repeat(200));
        assert!(refused(&long_chain).contains("nest deeper"));
        assert!(refused(&"x".repeat(MAX_SQL_BYTES + 1)).contains("bytes"));
    }
}

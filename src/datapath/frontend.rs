//! Client → upstream: analyse, rewrite and refuse.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::resolution::Words;
use super::values::{encrypt_param, encrypt_text_literal};
use super::{
    CopyStream, DataPath, DataPathError, Expect, Portal, Prepared, Protection, ResultTransform,
    SimpleStatement,
};
use crate::policy::LogicalType;
use crate::sql::refusal::{ColumnName, Fixed, Operation, Reason, Refusal};
use crate::sql::rewrite::{null_projection_edits, rewrite_with_edits, RewriteError};
use crate::sql::{
    may_mention, AnalysisContext, CopyDirection, CopyPlan, Lineage, ResultShape, StatementKind,
    StatementPlan,
};
use crate::wire::extended::{
    decode_execute, decode_query, decode_target, encode_query, format_for, Bind, Parse, Target,
};
use crate::wire::{Flow, Oid, Tag};

/// bytea and bytea[] type OIDs, for parameters that carry ciphertext upstream.
/// Binary format code.
const BINARY: i16 = 1;

impl DataPath {
    /// Handles one client message, appending what goes upstream to `out`.
    pub fn on_frontend(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<Flow, DataPathError> {
        let tag = Tag(msg[0]);
        if self.state.discards(tag) {
            // PostgreSQL would skip these too, after the error we injected.
            return Ok(Flow::Continue);
        }
        match tag {
            Tag::QUERY => self.on_simple_query(msg, out)?,
            Tag::PARSE => {
                self.sink.statement_received();
                self.on_parse(msg, out)?;
            }
            Tag::BIND => self.on_bind(msg, out)?,
            Tag::DESCRIBE => self.on_describe(msg, out)?,
            Tag::EXECUTE => self.on_execute(msg, out)?,
            Tag::CLOSE => {
                match decode_target(msg, "Close")? {
                    Target::Statement(n) => {
                        self.statements.remove(&n);
                    }
                    Target::Portal(n) => {
                        self.portals.remove(&n);
                    }
                }
                out.extend_from_slice(msg);
            }
            Tag::SYNC => {
                self.state.client_sync();
                out.extend_from_slice(msg);
                self.inject_search_path_query(out);
            }
            Tag::FLUSH => out.extend_from_slice(msg),
            Tag::COPY_DATA => match self.state.copy_in_stream() {
                Some((c, prot)) => {
                    c.feed(&msg[5..], prot, &self.codec, &self.sink, out)?;
                }
                None => out.extend_from_slice(msg),
            },
            Tag::COPY_DONE => {
                self.copy_settled();
                if let Some((mut c, prot)) = self.state.client_copy_done() {
                    c.finish(&prot, &self.codec, &self.sink, out)?;
                }
                out.extend_from_slice(msg);
            }
            Tag::COPY_FAIL => {
                self.copy_settled();
                self.state.client_copy_fail();
                out.extend_from_slice(msg);
            }
            Tag::FUNCTION_CALL => self.on_function_call(msg, out),
            Tag::TERMINATE => {
                out.extend_from_slice(msg);
                return Ok(Flow::Stop);
            }
            _ => out.extend_from_slice(msg),
        }
        Ok(Flow::Continue)
    }

    /// A simple Query: what its text changes for the session (name resolution,
    /// SQL-level prepared statements, created functions), then [`Self::on_query`]. The
    /// text is scanned for the words those tests look for once, and each exact test runs
    /// only when its words occur.
    fn on_simple_query(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        self.sink.statement_received();
        // A search_path refresh held back by a COPY goes first.
        self.copy_settled();
        self.inject_search_path_query(out);
        let raw = decode_query(msg)?;
        let words = Words::of(raw);
        self.note_resolution_change(raw, words, false);
        if words.prepared() {
            self.note_prepared_changes(&String::from_utf8_lossy(raw));
        }
        self.on_query(msg, raw, words, out)?;
        self.refresh_after_query(raw, words, out);
        Ok(())
    }

    /// FunctionCall: passed when nothing the session's roles may touch is protected or
    /// it is a large-object function; otherwise refused.
    fn on_function_call(&mut self, msg: &[u8], out: &mut BytesMut) {
        let prot = self.protection.load_full();
        let oid = msg
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if prot.is_empty()
            || !self.reach.can_reach_protected
            || oid.is_some_and(is_large_object_function)
        {
            // Nothing this session's roles may touch is protected (whatever the
            // function reads, it cannot be a protected column), or it is one of
            // the large-object functions libpq calls this way, which read and
            // write pg_largeobject only, never a table.
            out.extend_from_slice(msg);
        } else {
            // A function call names a function by OID: pgcloak cannot see what it reads.
            let err = DataPathError::from(Refusal::fixed(Fixed::FunctionCallMessage));
            self.inject_simple_failure(&err, out);
        }
    }

    fn context<'a>(&'a self, prot: &'a Protection) -> AnalysisContext<'a> {
        AnalysisContext {
            policy: &prot.policy,
            schema: self.schema.as_ref(),
            search_path: &self.search_path,
            names: self.schema.names(),
            in_list_cap: prot.in_list_cap,
            force_full_analysis: false,
        }
    }

    /// Refuses a statement that may call a function this session created with SQL
    /// pgcloak cannot see, when the session can reach protected columns (unless the policy
    /// allows it): the catalog's reach set learns of it only later (after its transaction
    /// commits and the next snapshot), and until then the fast path would let it run.
    fn check_created_opaque(&self, prot: &Protection, sql: &str) -> Result<(), DataPathError> {
        if !self.reach.can_reach_protected || prot.is_empty() {
            return Ok(());
        }
        match crate::sql::session_state::mentions_created(sql, &self.created_opaque) {
            Some(name) if !prot.policy.function_allowed(name.as_str()) => {
                Err(Refusal::of(Reason::CreatedOpaqueFunction(name)).into())
            }
            _ => Ok(()),
        }
    }

    /// Records the functions and views a statement text creates (see
    /// [`Self::check_created_opaque`]).
    fn note_created_functions(&mut self, text: &str) {
        for (name, dynamic) in crate::sql::session_state::created_functions(text) {
            // A function or view calling one that is already opaque is opaque too.
            let calls_opaque = self.created_opaque.iter().any(|o| {
                text.as_bytes()
                    .windows(o.len())
                    .any(|w| w.eq_ignore_ascii_case(o.as_bytes()))
            });
            if dynamic || calls_opaque {
                self.created_opaque.insert(name);
            } else {
                self.created_opaque.remove(&name);
            }
        }
    }

    /// What the session knows of a prepared statement by name: from SQL PREPARE through
    /// this session (planned, or known to touch nothing protected), or from a Parse.
    /// `Some(None)`: it touches nothing protected. None: pgcloak never saw it prepared.
    fn prepared_plan(&self, name: &str) -> Option<Option<Arc<StatementPlan>>> {
        self.sql_prepared
            .get(name)
            .map(|p| Some(Arc::new((**p).clone())))
            .or_else(|| self.statements.get(name).map(|p| p.plan.clone()))
            .or_else(|| self.plain_prepared.contains(name).then_some(None))
    }

    /// Follows SQL-level PREPARE / DEALLOCATE / DISCARD ALL, so that `EXECUTE name` of a
    /// statement pgcloak saw prepared is known: a PREPARE on the fast path is recorded in
    /// `plain_prepared`, one that touches a protected column is planned by the analysis
    /// and recorded in `sql_prepared`.
    fn note_prepared_changes(&mut self, text: &str) {
        use crate::sql::session_state::{prepared_changes, PreparedChange};
        for change in prepared_changes(text) {
            match change {
                PreparedChange::Prepare(name) => {
                    // Known again only once it is seen to pass: on the fast path
                    // (below) or planned by the analysis (`sql_prepared`). A refused
                    // PREPARE never reaches PostgreSQL, so its name stays unknown.
                    self.sql_prepared.remove(&name);
                    self.plain_prepared.remove(&name);
                }
                PreparedChange::Deallocate(name) => {
                    self.sql_prepared.remove(&name);
                    self.plain_prepared.remove(&name);
                }
                PreparedChange::DeallocateAll => {
                    self.sql_prepared.clear();
                    self.plain_prepared.clear();
                }
            }
        }
    }

    /// Whether the statement text can be forwarded without analysis: nothing is
    /// protected, or it names nothing that can reach a protected column.
    fn fast_path(&self, prot: &Protection, sql: &str) -> bool {
        if prot.is_empty() {
            return true;
        }
        if may_mention(sql, self.schema.names()) {
            return false;
        }
        // A schema view resolved for an older policy does not know the new policy's
        // names: they must not be missed in the meantime.
        self.schema.policy_generation() == prot.generation() || !may_mention(sql, &prot.names)
    }

    /// [`Self::fast_path`] for a prepared statement's text, remembered when plain (see
    /// [`super::PlainTexts`]): drivers prepare the same text again and again (an unnamed
    /// statement per execution), while simple Query texts mostly differ by literals.
    fn fast_path_remembered(&self, prot: &Protection, sql: &str) -> bool {
        let generation = prot.generation();
        if self
            .plain_texts
            .borrow()
            .holds(&self.schema, generation, sql)
        {
            return true;
        }
        let plain = self.fast_path(prot, sql);
        if plain && !prot.is_empty() {
            self.plain_texts
                .borrow_mut()
                .insert(&self.schema, generation, sql);
        }
        plain
    }

    /// The client's SQL bytes as text (decoded from client_encoding).
    fn decode_sql<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, DataPathError> {
        self.codec
            .client_encoding
            .decode(LogicalType::Text, bytes)
            .map_err(|e| DataPathError::codec("(statement text)", e))
    }

    /// Text back to the client's encoding, for upstream.
    fn encode_sql(&self, text: &str) -> Result<Vec<u8>, DataPathError> {
        self.codec
            .client_encoding
            .encode(LogicalType::Text, text)
            .map(|c| c.into_owned())
            .map_err(|e| DataPathError::codec("(statement text)", e))
    }

    /// A simple Query: the fast path forwards the client's bytes untouched; anything
    /// that may reach a protected column is analysed ([`Self::query_analysed`]).
    fn on_query(
        &mut self,
        msg: &[u8],
        raw: &[u8],
        words: Words,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        let sql = match self.decode_sql(raw) {
            Ok(s) => s,
            Err(e) => {
                self.inject_simple_failure(&e, out);
                return Ok(());
            }
        };
        let prot = self.protection.load_full();
        self.follow_generation(&prot);
        if let Err(e) = self.check_created_opaque(&prot, &sql) {
            self.inject_simple_failure(&e, out);
            return Ok(());
        }
        if words.creates() {
            self.note_created_functions(&String::from_utf8_lossy(raw));
        }
        if self.fast_path(&prot, &sql) {
            self.sink.statement_fast_path(&sql);
            if words.prepared() {
                for change in crate::sql::session_state::prepared_changes(&sql) {
                    if let crate::sql::session_state::PreparedChange::Prepare(name) = change {
                        self.plain_prepared.insert(name);
                    }
                }
            }
            self.state.expect(Expect::Simple(VecDeque::new()));
            out.extend_from_slice(msg);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let r = self.query_analysed(&prot, &sql, out);
        self.sink.handler_time(started);
        r
    }

    /// A simple Query the analysis plans: checked, rewritten (literals encrypted, names
    /// qualified), or failed at its first refused statement.
    fn query_analysed(
        &mut self,
        prot: &Arc<Protection>,
        sql: &str,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        let analysis = match self
            .check_schema(prot)
            .and_then(|()| Ok(prot.cache.analyze(sql, &[], &self.context(prot))?))
        {
            Ok(a) => a,
            Err(e) => {
                self.inject_simple_failure(&e, out);
                return Ok(());
            }
        };
        let fp = &analysis.fingerprint;
        self.sink
            .statement_analysed(sql, &analysis.plans, &prot.policy);
        let (mut statements, actions, mut failure) = self.plan_query(prot, sql, &analysis);
        // EXECUTE name(args) alone: splice its literal arguments.
        if analysis.plans.len() == 1 {
            if let Some(ex) = &analysis.plans[0].execute {
                // PREPARE through this session's text, or a protocol-level Parse (drivers
                // prepare with Parse and some run the statement with SQL EXECUTE).
                match self.prepared_plan(&ex.name) {
                    // Prepared by Parse, and the fast path proved it touches nothing protected.
                    Some(None) => {}
                    Some(Some(prepared)) => match ex.bind(&prepared) {
                        Ok((lits, params)) if params.is_empty() => {
                            let edits = self.session_edits(prot, sql, fp, &analysis.plans[0])?;
                            let text =
                                self.rewrite_literals(prot, sql, fp, lits.iter(), edits.iter())?;
                            if let Some(st) = statements.front_mut() {
                                st.transform = transform_for(prot, prepared.result.as_ref(), None);
                            }
                            let bytes = self.encode_sql(&text)?;
                            self.state.expect(Expect::Simple(statements));
                            out.extend_from_slice(&encode_query(&bytes));
                            return Ok(());
                        }
                        Ok(_) => {
                            failure = Some((0, Refusal::fixed(Fixed::ExecuteWithParams).into()));
                        }
                        Err(e) => failure = Some((0, DataPathError::Sql(e))),
                    },
                    None if prot.is_empty() || !self.reach.can_reach_protected => {}
                    None => {
                        // Never prepared through pgcloak: answer as PostgreSQL would, without
                        // letting a statement pgcloak cannot check run.
                        failure = Some((0, DataPathError::UnknownPrepared(ex.name.clone())));
                    }
                }
            }
        }
        self.finish_query(prot, sql, &analysis, statements, actions, failure, out)
    }

    /// Checks each statement of an analysed query string in order: what upstream will
    /// answer for each, the literals to encrypt, and the first refusal (its start).
    #[allow(clippy::type_complexity)]
    fn plan_query<'a>(
        &mut self,
        prot: &Arc<Protection>,
        sql: &str,
        analysis: &'a crate::sql::Analysis,
    ) -> (
        VecDeque<SimpleStatement>,
        Vec<&'a crate::sql::LiteralAction>,
        Option<(usize, DataPathError)>,
    ) {
        let fp = &analysis.fingerprint;
        let mut statements = VecDeque::new();
        let mut actions = Vec::new();
        let mut failure: Option<(usize, DataPathError)> = None;
        for plan in analysis.plans.iter() {
            let start = plan.start.resolve(fp).unwrap_or(0);
            if let Err(e) = self.check_plan(prot, plan) {
                failure = Some((start, e));
                break;
            }
            let plain_execute = plan
                .execute
                .as_ref()
                .is_some_and(|ex| matches!(self.prepared_plan(&ex.name), Some(None)));
            if plan.execute.is_some() && !plain_execute {
                failure = Some((start, Refusal::fixed(Fixed::ExecuteInMultiStatement).into()));
                if analysis.plans.len() == 1 {
                    failure = None;
                }
            }
            actions.extend(plan.literals.iter());
            statements.push_back(SimpleStatement {
                transform: transform_for(prot, plan.result.as_ref(), None),
                copy: plan
                    .copy
                    .clone()
                    .filter(|c| c.direction == CopyDirection::ToStdout)
                    .map(|c| copy_stream(prot, c)),
                injected_error: false,
            });
            if let Some(c) = &plan.copy {
                if c.direction == CopyDirection::FromStdin && c.fields.iter().any(Option::is_some) {
                    self.state.plan_copy_in(copy_stream(prot, c.clone()));
                }
            }
            if let Some(p) = &plan.prepare {
                self.sql_prepared
                    .insert(p.name.clone(), p.statement.clone());
            } else if plan.rejection.is_none() {
                // A PREPARE the analysis found touching nothing protected.
                let text = plan.range(fp).and_then(|r| sql.get(r)).unwrap_or("");
                for change in crate::sql::session_state::prepared_changes(text) {
                    if let crate::sql::session_state::PreparedChange::Prepare(name) = change {
                        self.plain_prepared.insert(name);
                    }
                }
            }
        }
        (statements, actions, failure)
    }

    /// Sends the query string upstream: every statement rewritten, or those before the
    /// refused one followed by a statement that raises pgcloak's error.
    #[allow(clippy::too_many_arguments)]
    fn finish_query(
        &mut self,
        prot: &Arc<Protection>,
        sql: &str,
        analysis: &crate::sql::Analysis,
        mut statements: VecDeque<SimpleStatement>,
        actions: Vec<&crate::sql::LiteralAction>,
        mut failure: Option<(usize, DataPathError)>,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        let fp = &analysis.fingerprint;
        // A literal that cannot be encoded for its column ends its statement, as
        // PostgreSQL's own input error would (see super::recover).
        let mut rewritten_all = None;
        if failure.is_none() {
            let edits = self.plans_edits(prot, sql, fp, analysis.plans.iter())?;
            match self.rewrite_literals(prot, sql, fp, actions.into_iter(), edits.iter()) {
                Ok(t) => rewritten_all = Some(t),
                Err(e) => {
                    failure = Some(self.first_bad_statement(prot, sql, fp, &analysis.plans, e))
                }
            }
        }
        let text = match (rewritten_all, failure) {
            (Some(t), _) => t,
            (None, None) => String::new(),
            (None, Some(mut failed)) => {
                // Keep the statements before the refused one, rewritten, and make the
                // server fail at the refused one: the implicit transaction aborts.
                let rewritten = loop {
                    let kept: Vec<&StatementPlan> = analysis
                        .plans
                        .iter()
                        .take_while(|p| p.start.resolve(fp).unwrap_or(0) < failed.0)
                        .collect();
                    let edits = self.plans_edits(prot, sql, fp, kept.iter().copied())?;
                    let keep = kept.iter().flat_map(|p| p.literals.iter());
                    match self.rewrite_literals(prot, sql, fp, keep, edits.iter()) {
                        Ok(t) => break t,
                        // An earlier statement holds a bad value: it fails first.
                        Err(e) => {
                            let earlier: Vec<_> = analysis
                                .plans
                                .iter()
                                .filter(|p| p.start.resolve(fp).unwrap_or(0) < failed.0)
                                .cloned()
                                .collect();
                            failed = self.first_bad_statement(prot, sql, fp, &earlier, e);
                        }
                    }
                };
                let (start, err) = (failed.0, &failed.1);
                err.report(&self.sink);
                self.note_guard_close(err);
                let delta = rewritten.len() as isize - sql.len() as isize;
                let cut = (start as isize + delta).max(0) as usize;
                let mut text = rewritten.get(..cut).unwrap_or("").to_string();
                text.push_str(&raise_statement(err));
                // Statements after the refused one never run, as in PostgreSQL.
                let kept = analysis
                    .plans
                    .iter()
                    .take_while(|p| p.start.resolve(fp).unwrap_or(0) < start)
                    .count();
                statements.truncate(kept);
                statements.push_back(SimpleStatement {
                    transform: None,
                    copy: None,
                    injected_error: true,
                });
                text
            }
        };
        let bytes = self.encode_sql(&text)?;
        self.state.expect(Expect::Simple(statements));
        out.extend_from_slice(&encode_query(&bytes));
        Ok(())
    }

    /// The first statement whose literals cannot be encoded (its start and error),
    /// after encoding all of them failed with `all_failed`.
    fn first_bad_statement(
        &self,
        prot: &Protection,
        sql: &str,
        fp: &crate::sql::Fingerprint,
        plans: &[StatementPlan],
        all_failed: DataPathError,
    ) -> (usize, DataPathError) {
        for plan in plans {
            let edits = match self.session_edits(prot, sql, fp, plan) {
                Ok(e) => e,
                Err(e) => return (plan.start.resolve(fp).unwrap_or(0), e),
            };
            if let Err(e) = self.rewrite_literals(prot, sql, fp, plan.literals.iter(), edits.iter())
            {
                return (plan.start.resolve(fp).unwrap_or(0), e);
            }
        }
        (0, all_failed)
    }

    /// The role-dependent checks for one analysed statement.
    fn check_plan(&self, prot: &Protection, plan: &StatementPlan) -> Result<(), DataPathError> {
        plan.authorize(&prot.policy, &self.roles)?;
        plan.authorize_opaque(&prot.policy, self.reach)?;
        if plan.touches_policy {
            for col in plan_columns(plan) {
                if let Err(e) = self.schema.snapshot().location(col) {
                    use crate::catalog::CatalogError as C;
                    use crate::sql::refusal::SchemaProblem as P;
                    let problem = match e {
                        C::TableMissing { .. } => P::TableMissing,
                        C::NotATable { kind, .. } => P::NotATable(kind),
                        C::ColumnMissing { .. } => P::ColumnMissing,
                        C::NotBytea { .. } => P::NotBytea,
                        _ => P::Unresolved,
                    };
                    let column = ColumnName::quoted(&prot.policy, col);
                    return Err(Refusal::of(Reason::SchemaMismatch(column, problem)).into());
                }
            }
        }
        Ok(())
    }

    /// A plan's text edits for this session: its schema qualification, plus the
    /// select-list items that read a column whose view is `null` for the session's roles
    /// (sent as `NULL::bytea AS "col"`: the database-side guard leaves such roles no
    /// SELECT privilege on the column, and the client still gets a NULL of its type).
    fn session_edits(
        &self,
        prot: &Protection,
        sql: &str,
        fp: &crate::sql::Fingerprint,
        plan: &StatementPlan,
    ) -> Result<Vec<crate::sql::TextEdit>, DataPathError> {
        let mut edits = plan.edits.clone();
        if !plan.projections.is_empty() {
            let policy = &prot.policy;
            let roles = &self.roles;
            let mut is_null = |c| policy.access_for(roles, c) == crate::policy::View::Null;
            edits.extend(null_projection_edits(
                sql,
                fp,
                &plan.projections,
                &mut is_null,
            )?);
        }
        Ok(edits)
    }

    /// [`Self::session_edits`] of several plans of one query string.
    fn plans_edits<'p>(
        &self,
        prot: &Protection,
        sql: &str,
        fp: &crate::sql::Fingerprint,
        plans: impl Iterator<Item = &'p StatementPlan>,
    ) -> Result<Vec<crate::sql::TextEdit>, DataPathError> {
        let mut edits = Vec::new();
        for p in plans {
            edits.extend(self.session_edits(prot, sql, fp, p)?);
        }
        Ok(edits)
    }

    /// The text to send upstream: literal splices (encrypted) and the analysis' text
    /// edits (schema qualification) applied to the client's text.
    fn rewrite_literals<'p>(
        &self,
        prot: &Protection,
        sql: &str,
        fp: &crate::sql::Fingerprint,
        actions: impl Iterator<Item = &'p crate::sql::LiteralAction>,
        edits: impl Iterator<Item = &'p crate::sql::TextEdit>,
    ) -> Result<String, DataPathError> {
        let actions: Vec<_> = actions.collect();
        let edits: Vec<_> = edits.collect();
        if actions.is_empty() && edits.is_empty() {
            return Ok(sql.to_string());
        }
        let codec = &self.codec;
        let sink = &self.sink;
        let mut enc = |col, text: &str| encrypt_text_literal(prot, codec, sink, col, text);
        rewrite_with_edits(sql, fp, actions, edits, &mut enc).map_err(|e| match e {
            RewriteError::Sql(e) => DataPathError::Sql(e),
            RewriteError::Encrypt { error, .. } => error,
        })
    }

    fn on_parse(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        let parse = Parse::decode(msg)?;
        let words = Words::of(&parse.sql);
        self.note_resolution_change(&parse.sql, words, true);
        if words.creates() {
            self.note_created_functions(&String::from_utf8_lossy(&parse.sql));
        }
        let prot = self.protection.load_full();
        let sql: Arc<str> = match self.decode_sql(&parse.sql) {
            Ok(s) => Arc::from(&*s),
            Err(e) => {
                self.statements.remove(&parse.name);
                self.inject_extended_failure(&e, out);
                return Ok(());
            }
        };
        let param_types: Arc<[u32]> = Arc::from(parse.param_types.as_slice());
        self.follow_generation(&prot);
        let planned = self
            .plan_statement(&prot, &sql, &param_types)
            .and_then(|p| match p {
                None => Ok(None),
                Some((plan, text)) => Ok(Some((plan, self.encode_sql(&text)?))),
            });
        match planned {
            Ok(None) => {
                self.statements.insert(
                    parse.name.clone(),
                    Prepared {
                        prot,
                        plan: None,
                        sql,
                        param_types,
                    },
                );
                out.extend_from_slice(msg);
            }
            Ok(Some((plan, text))) => {
                let mut rewritten = parse.clone();
                rewritten.sql = text;
                for p in &plan.params {
                    let i = usize::from(p.index).saturating_sub(1);
                    if rewritten.param_types.len() <= i {
                        rewritten.param_types.resize(i + 1, 0);
                    }
                    rewritten.param_types[i] = if p.array {
                        Oid::BYTEA_ARRAY.0
                    } else {
                        Oid::BYTEA.0
                    };
                }
                self.statements.insert(
                    parse.name.clone(),
                    Prepared {
                        prot,
                        plan: Some(plan),
                        sql,
                        param_types,
                    },
                );
                if rewritten == parse {
                    out.extend_from_slice(msg);
                } else {
                    out.extend_from_slice(&rewritten.encode());
                }
            }
            Err(e) => {
                self.statements.remove(&parse.name);
                self.inject_extended_failure(&e, out);
            }
        }
        Ok(())
    }

    /// The fast path or the full analysis of one prepared statement under `prot`:
    /// None when its text cannot touch a protected column, else its plan and the
    /// text to send upstream.
    fn plan_statement(
        &self,
        prot: &Protection,
        sql: &str,
        param_types: &[u32],
    ) -> Result<Option<(Arc<StatementPlan>, String)>, DataPathError> {
        self.check_created_opaque(prot, sql)?;
        if self.fast_path_remembered(prot, sql) {
            self.sink.statement_fast_path(sql);
            return Ok(None);
        }
        self.analyse_single(prot, sql, param_types).map(Some)
    }

    /// After a policy reload: re-resolves the session's schema for the new
    /// generation when the snapshot still fits it (see [`super::SessionSchema::for_generation`]).
    fn follow_generation(&mut self, prot: &Protection) {
        if self.schema.policy_generation() != prot.generation() {
            if let Some(s) = self.schema.for_generation(prot) {
                self.schema = Arc::new(s);
            }
        }
    }

    /// Refuses analysis against a schema resolved for another policy generation:
    /// its column references would point at other columns.
    fn check_schema(&self, prot: &Protection) -> Result<(), DataPathError> {
        if self.schema.policy_generation() == prot.generation() {
            return Ok(());
        }
        Err(Refusal::of(Reason::SchemaUnresolved {
            generation: prot.generation(),
        })
        .into())
    }

    /// Analyses a one-statement text and rewrites its literals.
    fn analyse_single(
        &self,
        prot: &Protection,
        sql: &str,
        param_types: &[u32],
    ) -> Result<(Arc<StatementPlan>, String), DataPathError> {
        self.check_schema(prot)?;
        let analysis = prot.cache.analyze(sql, param_types, &self.context(prot))?;
        self.sink
            .statement_analysed(sql, &analysis.plans, &prot.policy);
        let plans: Vec<&StatementPlan> = analysis
            .plans
            .iter()
            .filter(|p| {
                !(p.kind == StatementKind::Other
                    && !p.touches_policy
                    && p.rejection.is_none()
                    && p.result.is_none())
                    || analysis.plans.len() == 1
            })
            .collect();
        let [plan] = plans.as_slice() else {
            return Err(Refusal::fixed(Fixed::PreparedNotOneCommand).into());
        };
        self.check_plan(prot, plan)?;
        // `EXECUTE name` of a statement known to touch nothing protected runs as it is
        // (psql's `\gdesc` and drivers send it through Parse).
        let plain_execute = plan
            .execute
            .as_ref()
            .is_some_and(|ex| matches!(self.prepared_plan(&ex.name), Some(None)));
        if (plan.execute.is_some() && !plain_execute) || plan.prepare.is_some() {
            return Err(Refusal::fixed(Fixed::PrepareInExtended).into());
        }
        let edits = self.session_edits(prot, sql, &analysis.fingerprint, plan)?;
        let text = self.rewrite_literals(
            prot,
            sql,
            &analysis.fingerprint,
            plan.literals.iter(),
            edits.iter(),
        )?;
        Ok((Arc::new((*plan).clone()), text))
    }

    /// Bind: a statement unknown to pgcloak or known to touch nothing protected (under
    /// the generation in force) is forwarded as its original bytes, without decoding
    /// its parameters; otherwise [`Self::bind_planned`] encrypts them.
    fn on_bind(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        if let Some((portal, statement)) = bind_names(msg) {
            let current = self.protection.load();
            let plain = match self.statements.get(statement) {
                // Unknown to us means unknown upstream too: let PostgreSQL report it.
                None => true,
                Some(p) => p.plan.is_none() && p.prot.generation() == current.generation(),
            };
            if plain {
                // A portal with nothing to rewrite is one pgcloak does not track.
                if !self.portals.is_empty() {
                    self.portals.remove(portal);
                }
                out.extend_from_slice(msg);
                return Ok(());
            }
        }
        let started = std::time::Instant::now();
        let r = self.bind_planned(msg, out);
        self.sink.handler_time(started);
        r
    }

    fn bind_planned(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        let current = self.protection.load_full();
        let mut bind = Bind::decode(msg)?;
        let Some(mut prepared) = self.statements.get(&bind.statement).cloned() else {
            // Unknown to us means unknown upstream too: let PostgreSQL report it.
            self.portals.remove(&bind.portal);
            out.extend_from_slice(msg);
            return Ok(());
        };
        if prepared.prot.generation() != current.generation() {
            self.follow_generation(&current);
            match self.recheck_prepared(&current, &bind.statement, &prepared) {
                Ok(fresh) => {
                    self.statements
                        .insert(bind.statement.clone(), fresh.clone());
                    prepared = fresh;
                }
                Err(e) => {
                    self.portals.remove(&bind.portal);
                    self.inject_extended_failure(&e, out);
                    return Ok(());
                }
            }
        }
        // From here on, the generation the plan's column references index.
        let prot = prepared.prot.clone();
        let Some(plan) = &prepared.plan else {
            self.portals.insert(
                bind.portal.clone(),
                Portal {
                    transform: None,
                    copy: None,
                },
            );
            out.extend_from_slice(msg);
            return Ok(());
        };
        let mut changed = false;
        if !plan.params.is_empty() {
            match self.encrypt_bind_params(&prot, plan, &mut bind) {
                Ok(c) => changed = c,
                Err(e) => {
                    self.portals.remove(&bind.portal);
                    self.inject_extended_failure(&e, out);
                    return Ok(());
                }
            }
        }
        let transform = plan.result.as_ref().and_then(|shape| {
            let client: Vec<i16> = (0..shape.columns.len())
                .map(|i| format_for(&bind.result_formats, i))
                .collect();
            transform_for(&prot, Some(shape), Some(client))
        });
        if let Some(t) = &transform {
            match upstream_result_formats(t, &bind.result_formats) {
                Ok(Some(formats)) => {
                    bind.result_formats = formats;
                    changed = true;
                }
                Ok(None) => {}
                Err(what) => return self.refuse_bind(&bind.portal, what, out),
            }
        }
        self.portals.insert(
            bind.portal.clone(),
            Portal {
                transform,
                copy: plan.copy.clone().map(|c| copy_stream(&prot, c)),
            },
        );
        if changed {
            out.extend_from_slice(&bind.encode());
        } else {
            out.extend_from_slice(msg);
        }
        Ok(())
    }

    /// Encrypts the Bind parameters that go to protected columns (sent in binary);
    /// true when one was.
    fn encrypt_bind_params(
        &self,
        prot: &Protection,
        plan: &StatementPlan,
        bind: &mut Bind,
    ) -> Result<bool, DataPathError> {
        let mut changed = false;
        let n = bind.params.len();
        let mut formats: Vec<i16> = (0..n).map(|i| bind.param_format(i)).collect();
        for action in &plan.params {
            let i = usize::from(action.index).saturating_sub(1);
            let Some(slot) = bind.params.get_mut(i) else {
                continue;
            };
            let Some(value) = slot.as_ref() else {
                continue;
            };
            let format = formats.get(i).copied().unwrap_or(0);
            let encrypted = encrypt_param(prot, &self.codec, &self.sink, action, format, value)?;
            *slot = Some(Bytes::from(encrypted));
            if let Some(f) = formats.get_mut(i) {
                *f = BINARY;
            }
            changed = true;
        }
        bind.param_formats = formats;
        Ok(changed)
    }

    fn refuse_bind(
        &mut self,
        portal: &str,
        what: Fixed,
        out: &mut BytesMut,
    ) -> Result<(), DataPathError> {
        self.portals.remove(portal);
        let e = DataPathError::from(Refusal::fixed(what));
        self.inject_extended_failure(&e, out);
        Ok(())
    }

    /// A statement analysed under an older policy generation: analyse its text
    /// again under `current`. Upstream keeps the statement as it was parsed (its
    /// text, literals and parameter types), so the new plan is accepted only when
    /// it means the same: the same parameters and literals encrypted for the same
    /// columns, the same result columns decrypted. Otherwise it fails like
    /// PostgreSQL's "cached plan must not change result type".
    fn recheck_prepared(
        &self,
        current: &Arc<Protection>,
        _name: &str,
        prepared: &Prepared,
    ) -> Result<Prepared, DataPathError> {
        let fresh = self.plan_statement(current, &prepared.sql, &prepared.param_types)?;
        let old = super::meaning::PlanMeaning::of(&prepared.prot, prepared.plan.as_deref());
        let new = super::meaning::PlanMeaning::of(current, fresh.as_ref().map(|(p, _)| &**p));
        if old != new {
            return Err(Refusal::new(Operation::Prepared, Reason::PlanChanged).into());
        }
        Ok(Prepared {
            prot: current.clone(),
            plan: fresh.map(|(p, _)| p),
            sql: prepared.sql.clone(),
            param_types: prepared.param_types.clone(),
        })
    }

    fn on_describe(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        match decode_target(msg, "Describe")? {
            Target::Statement(name) => {
                let described = self
                    .statements
                    .get(&name)
                    .and_then(|p| Some((p.plan.clone()?, p.prot.clone())));
                self.state.expect(match described {
                    Some((plan, prot)) => Expect::DescribeStatement {
                        params: plan.params.clone(),
                        transform: transform_for(&prot, plan.result.as_ref(), None),
                        prot: Some(prot),
                    },
                    None => Expect::DescribeStatement {
                        params: Vec::new(),
                        prot: None,
                        transform: None,
                    },
                });
            }
            Target::Portal(name) => {
                let transform = self.portals.get(&name).and_then(|p| p.transform.clone());
                self.state.expect(Expect::DescribePortal { transform });
            }
        }
        out.extend_from_slice(msg);
        Ok(())
    }

    fn on_execute(&mut self, msg: &[u8], out: &mut BytesMut) -> Result<(), DataPathError> {
        let (portal, _) = decode_execute(msg)?;
        let (transform, copy) = self
            .portals
            .get(&portal)
            .map(|p| (p.transform.clone(), p.copy.clone()))
            .unwrap_or((None, None));
        let copy_out = match copy {
            Some(c) if c.plan.direction == CopyDirection::FromStdin => {
                if c.plan.fields.iter().any(Option::is_some) {
                    self.state.plan_copy_in(c);
                }
                None
            }
            other => other,
        };
        self.state.expect(Expect::Execute {
            transform,
            copy: copy_out,
        });
        out.extend_from_slice(msg);
        Ok(())
    }

    /// Makes upstream fail at this point of a pipeline, with pgcloak's error: a
    /// DO block that raises it, run through an injected Parse/Bind/Execute on the
    /// unnamed statement. The injected ParseComplete and BindComplete are dropped, so
    /// the client's own message gets the error instead. Then discard until Sync.
    pub(super) fn inject_extended_failure(&mut self, err: &DataPathError, out: &mut BytesMut) {
        err.report(&self.sink);
        self.note_guard_close(err);
        let parse = Parse {
            name: String::new(),
            sql: raise_statement(err).into_bytes(),
            param_types: Vec::new(),
        };
        out.extend_from_slice(&parse.encode());
        let bind = Bind {
            portal: String::new(),
            statement: String::new(),
            param_formats: Vec::new(),
            params: Vec::new(),
            result_formats: Vec::new(),
        };
        out.extend_from_slice(&bind.encode());
        out.extend_from_slice(&crate::wire::extended::encode_execute("", 0));
        self.state.injected_extended_failure();
    }

    /// Makes upstream fail a simple Query (or function call) with pgcloak's error.
    pub(super) fn inject_simple_failure(&mut self, err: &DataPathError, out: &mut BytesMut) {
        err.report(&self.sink);
        self.note_guard_close(err);
        let mut st = VecDeque::new();
        st.push_back(SimpleStatement {
            transform: None,
            copy: None,
            injected_error: true,
        });
        self.state.expect(Expect::Simple(st));
        out.extend_from_slice(&encode_query(raise_statement(err).as_bytes()));
    }
}

/// The result formats to ask upstream for: raw envelopes (binary) on encrypted columns,
/// the rest as the client asked. None: nothing to change. Err: what pgcloak does not
/// support (SELECT * on a protected table with per-column or mixed formats).
fn upstream_result_formats(t: &ResultTransform, asked: &[i16]) -> Result<Option<Vec<i16>>, Fixed> {
    if !t.shape.has_encrypted() {
        return Ok(None);
    }
    // Ask upstream for raw envelopes on encrypted columns; keep the rest as asked.
    let ncols = t.shape.columns.len();
    let mut formats: Vec<i16> = (0..ncols).map(|i| format_for(asked, i)).collect();
    for (i, c) in t.shape.columns.iter().enumerate() {
        if matches!(c.lineage, Lineage::Encrypted(_)) {
            formats[i] = BINARY;
        }
    }
    if t.shape.plain_tail && asked.len() > 1 {
        // Unknown trailing columns: only a single format code can cover them.
        return Err(Fixed::PerColumnFormatsWithStar);
    }
    if !t.shape.plain_tail || formats.iter().all(|&f| f == format_for(asked, 0)) {
        Ok(Some(formats))
    } else {
        Err(Fixed::MixedFormatsWithStar)
    }
}

/// The portal and statement names of a well-formed Bind message, without decoding or
/// copying its parameters; None when it is malformed (then [`Bind::decode`] reports it).
fn bind_names(msg: &[u8]) -> Option<(&str, &str)> {
    let body = msg.get(5..)?;
    let cstr = |at: usize| -> Option<(&str, usize)> {
        let rest = body.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some((std::str::from_utf8(&rest[..end]).ok()?, at + end + 1))
    };
    let (portal, at) = cstr(0)?;
    let (statement, mut at) = cstr(at)?;
    let i16_at = |at: usize| -> Option<i16> {
        let b = body.get(at..at + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    };
    let formats = usize::try_from(i16_at(at)?).ok()?;
    at += 2 + 2 * formats;
    let params = usize::try_from(i16_at(at)?).ok()?;
    at += 2;
    for _ in 0..params {
        let b = body.get(at..at + 4)?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        at += 4;
        if len >= 0 {
            at += len as usize;
        } else if len != -1 {
            return None;
        }
    }
    let results = usize::try_from(i16_at(at)?).ok()?;
    body.get(at + 2..at + 2 + 2 * results)?;
    Some((portal, statement))
}

/// The built-in large-object functions (their OIDs are fixed in PostgreSQL's pg_proc.dat
/// and the same in every release libpq supports): lo_open, lo_close, loread, lowrite,
/// lo_lseek, lo_creat, lo_tell, lo_unlink, lo_truncate, lo_create, lo_lseek64, lo_tell64,
/// lo_truncate64. libpq and psycopg2 call them through the function-call message.
fn is_large_object_function(oid: u32) -> bool {
    matches!(
        oid,
        952 | 953 | 954 | 955 | 956 | 957 | 958 | 964 | 1004 | 715 | 3170 | 3171 | 3172
    )
}

/// The result transform of a shape, bound to the generation its column references index.
fn transform_for(
    prot: &Arc<Protection>,
    shape: Option<&ResultShape>,
    client_formats: Option<Vec<i16>>,
) -> Option<Arc<ResultTransform>> {
    shape.map(|shape| {
        Arc::new(ResultTransform {
            shape: shape.clone(),
            client_formats,
            prot: prot.clone(),
        })
    })
}

fn copy_stream(prot: &Arc<Protection>, plan: CopyPlan) -> CopyStream {
    CopyStream {
        plan: Arc::new(plan),
        prot: prot.clone(),
    }
}

/// Every policy column a plan refers to.
fn plan_columns(plan: &StatementPlan) -> Vec<crate::policy::ColumnRef> {
    let mut cols: Vec<_> = plan.literals.iter().map(|l| l.column).collect();
    cols.extend(plan.params.iter().map(|p| p.column));
    cols.extend(plan.searched.iter().copied());
    if let Some(r) = &plan.result {
        cols.extend(result_columns(r));
    }
    if let Some(c) = &plan.copy {
        cols.extend(c.fields.iter().flatten().copied());
    }
    cols
}

fn result_columns(shape: &ResultShape) -> impl Iterator<Item = crate::policy::ColumnRef> + '_ {
    shape.columns.iter().filter_map(|c| match c.lineage {
        Lineage::Encrypted(col) => Some(col),
        _ => None,
    })
}

/// A statement that makes PostgreSQL raise pgcloak's error, with its SQLSTATE.
/// The message holds column names and operations only, never a value.
pub(crate) fn raise_statement(err: &DataPathError) -> String {
    let quote = |s: &str| s.replace('\'', "''").replace("$pgcloak$", "$ pgcloak$");
    format!(
        "DO $pgcloak$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = '{}'; END$pgcloak$",
        err.sqlstate(),
        quote(&err.to_string())
    )
}

#[cfg(test)]
mod bind_tests {
    use super::bind_names;
    use crate::wire::extended::Bind;

    /// The names read without decoding agree with the full decoder, and every message the
    /// decoder refuses is refused here too (it then reports the error).
    #[test]
    fn bind_names_agree_with_the_decoder() {
        let bind = Bind {
            portal: "p1".into(),
            statement: "s1".into(),
            param_formats: vec![0, 1],
            params: vec![Some(bytes::Bytes::from_static(b"42")), None],
            result_formats: vec![1],
        };
        let msg = bind.encode();
        assert_eq!(bind_names(&msg), Some(("p1", "s1")));
        for cut in 5..msg.len() {
            let mut m = msg[..cut].to_vec();
            let len = (m.len() - 1) as i32;
            m[1..5].copy_from_slice(&len.to_be_bytes());
            if Bind::decode(&m).is_err() {
                assert_eq!(bind_names(&m), None, "cut at {cut}");
            }
        }
        let empty = Bind {
            portal: String::new(),
            statement: String::new(),
            param_formats: vec![],
            params: vec![],
            result_formats: vec![],
        };
        assert_eq!(bind_names(&empty.encode()), Some(("", "")));
    }
}

//! A connection (or transaction) with its prepared statements: every statement the store
//! makes is prepared once per connection, not once per call.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Error, GenericClient, Row, Statement};

/// The statements prepared on the current connection, by their text.
#[derive(Default)]
pub struct Statements(HashMap<&'static str, Statement>);

impl Statements {
    /// Forgets them all: the connection they were prepared on is gone.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// A client or transaction and the statement cache of its connection.
pub struct Db<'a, C: GenericClient> {
    pub client: &'a mut C,
    pub statements: &'a mut Statements,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Db<'_, C> {
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, Error> {
        if let Some(statement) = self.statements.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.0.insert(sql, statement.clone());
        Ok(statement)
    }

    /// Runs a query and returns its rows.
    pub fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.prepared(sql)?;
        self.client.query(&statement, params)
    }

    /// Runs a query that returns at most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, Error> {
        let statement = self.prepared(sql)?;
        self.client.query_opt(&statement, params)
    }

    /// Runs a query that returns exactly one row.
    pub fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.prepared(sql)?;
        self.client.query_one(&statement, params)
    }

    /// Runs a query planned for these parameters, not kept in the cache: for a query whose
    /// text varies between calls, or one over many rows at once (`= ANY($1)`, `unnest`),
    /// whose best plan depends on how many and on the table's size now. It costs a round
    /// trip more than a cached statement: for calls made once per batch, not per message.
    pub fn query_text(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.client.query(sql, params)
    }

    /// Runs a statement planned for these parameters (see [`query_text`](Self::query_text))
    /// and returns how many rows it changed.
    pub fn execute_text(&mut self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.client.execute(sql, params)
    }

    /// Runs a statement and returns how many rows it changed.
    pub fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.prepared(sql)?;
        self.client.execute(&statement, params)
    }
}

/// What went wrong, with the server's own message and SQLSTATE (the error's `Display` says
/// only "db error" for those), or with the causes (its `Display` says only "error
/// connecting to server", not that the connection was refused).
pub fn explain(error: &Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!("; {d}")).unwrap_or_default()
        ),
        None => {
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(current) = cause {
                text.push_str(&format!(": {current}"));
                cause = current.source();
            }
            text
        }
    }
}

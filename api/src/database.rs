//! Choosing the database: the configured URL when there is one, otherwise the embedded cluster
//! under the data directory (started here, stopped by `Database::close`).

use anyhow::Context;
use sqlx::PgPool;

use crate::config::Config;
use crate::embedded_pg::EmbeddedPostgres;

pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let running = config
            .database_url
            .is_empty()
            .then(|| EmbeddedPostgres::running_url(&config.data_dir))
            .flatten();
        let (url, embedded) = if let Some(url) = running {
            tracing::info!("using the embedded PostgreSQL of the running herald server");
            (url, None)
        } else if config.database_url.is_empty() {
            let data_dir = std::path::absolute(&config.data_dir)
                .with_context(|| format!("resolving {}", config.data_dir.display()))?;
            tracing::info!(data_dir = %data_dir.display(), "DATABASE_URL is not set: using the embedded PostgreSQL");
            let embedded = EmbeddedPostgres::start(&data_dir).await?;
            (embedded.database_url(), Some(embedded))
        } else {
            (config.database_url.expose().to_owned(), None)
        };
        match crate::startup::connect(&url, config.database.max_connections).await {
            Ok(pool) => Ok(Self { pool, embedded }),
            Err(error) => {
                if let Some(embedded) = embedded {
                    let _ = embedded.stop().await;
                }
                Err(error)
            }
        }
    }

    /// Closes the pool, then stops the embedded cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(embedded) = self.embedded {
            tracing::info!("stopping the embedded PostgreSQL");
            embedded.stop().await?;
        }
        Ok(())
    }
}

//! One fresh database per test, cloned from a template that is migrated once per migration set
//! (the template's name carries a hash of the migrations, so a changed migration gets a new
//! template). Creating the template is serialised across test processes with an advisory lock.

use sqlx::{Connection, PgConnection};

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with ./scripts/test, which starts \
         a PostgreSQL for them",
    )
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL");
    format!("{base}/{name}")
}

fn template_name() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in herald_store::MIGRATOR.iter() {
        for byte in migration.checksum.iter() {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("herald_tpl_{hash:016x}")
}

async fn ensure_template(admin: &mut PgConnection, template: &str) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_lock(727274)")
        .execute(&mut *admin)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(template)
            .fetch_one(&mut *admin)
            .await?;
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
            .execute(&mut *admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut *admin)
            .await?;
        let mut conn = PgConnection::connect(&with_database(&admin_url(), &building)).await?;
        herald_store::MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {template}"))
            .execute(&mut *admin)
            .await?;
    }
    sqlx::query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut *admin)
        .await?;
    Ok(())
}

/// Creates an empty, migrated database and returns its URL.
pub async fn fresh_database() -> String {
    let admin_url = admin_url();
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("the test PostgreSQL is reachable");
    let template = template_name();
    ensure_template(&mut admin, &template)
        .await
        .expect("the template database");
    let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut admin)
        .await
        .expect("server version");
    let strategy = if version >= 150_000 {
        " STRATEGY FILE_COPY"
    } else {
        ""
    };
    sqlx::query(&format!(
        "CREATE DATABASE {name} TEMPLATE {template}{strategy}"
    ))
    .execute(&mut admin)
    .await
    .expect("a fresh test database");
    admin.close().await.ok();
    with_database(&admin_url, &name)
}

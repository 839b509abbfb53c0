//! SMTP over TLS with AUTH, against aiosmtpd serving a certificate signed by a CA the test makes
//! (trusted through `email.smtp_ca_file`) and accepting one user and password: the mail arrives
//! encrypted and authenticated, over STARTTLS and over implicit TLS; wrong credentials, a server
//! that does not offer STARTTLS and a certificate from an unknown CA are outages whose message
//! names the settings to check (and never holds the password), not poison. TLS and AUTH do not
//! touch the database, so these run on SQLite only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use spine_email::mailer::{self, MailError, build_message};
use spine_email::reactions::OrderMails;
use spine_email::settings::{EmailSettings, SmtpTls, TransportKind};
use spine_email::store::EmailStore;
use spine_events::orders::OrderConfirmed;
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::{Handler, HandlerError};
use spine_kit::outbox::Outbox;
use spine_kit::testing::fresh_database;

use crate::support::*;

const USER: &str = "spine-mailer";
const PASSWORD: &str = "correct-horse-battery-staple";
const WRONG_PASSWORD: &str = "not-the-password-4711";

/// Settings for `smtp` on 127.0.0.1, with `tls`, trusting `ca` when given, as USER.
fn secured(smtp: &SmtpServer, tls: SmtpTls, ca: Option<&TestCa>, password: &str) -> EmailSettings {
    EmailSettings {
        transport: TransportKind::Smtp,
        smtp_host: "127.0.0.1".into(),
        smtp_port: smtp.port,
        smtp_tls: Some(tls),
        smtp_ca_file: ca.map(TestCa::ca_file),
        smtp_username: Some(USER.into()),
        smtp_password: Some(password.into()),
        smtp_timeout: Duration::from_secs(10),
        ..EmailSettings::default()
    }
}

/// Sends one confirmation to `to` through a mailer made from `settings`.
async fn send_one(settings: &EmailSettings, to: &str) -> Result<(), MailError> {
    let mailer = mailer::from_settings(settings, 4).expect("the settings are valid");
    let mail = spine_email::templates::order_confirmed(&OrderConfirmed::of(&placed(to)));
    let from: Mailbox = "Spine Shop <orders@spine.local>".parse().unwrap();
    let message = build_message(&from, &mail).unwrap();
    mailer.send(&mail, message).await
}

/// The two headers the test server writes about the session a message came in.
/// `err` is an outage (retried, never dead-lettered) whose message names every one of `says`,
/// and the server received no mail.
fn assert_outage(err: &MailError, says: &[&str], smtp: &SmtpServer) {
    assert!(matches!(err, MailError::Transient(_)), "an outage: {err}");
    let message = err.to_string();
    for said in says {
        assert!(message.contains(said), "{message:?} does not say {said:?}");
    }
    assert!(smtp.all_messages().is_empty(), "nothing was sent");
}

fn session_of(mail: &str) -> (String, String) {
    let header = |name: &str| {
        mail.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("missing")
            .trim()
            .to_owned()
    };
    (header("X-TLS:"), header("X-Auth-User:"))
}

#[tokio::test]
async fn a_mail_arrives_over_starttls_authenticated_with_the_right_credentials() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));
    let to = recipient("starttls");

    send_one(&secured(&smtp, SmtpTls::Starttls, Some(&ca), PASSWORD), &to)
        .await
        .expect("the server takes the mail");

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let (tls, user) = session_of(&mails[0]);
    assert!(tls.starts_with("TLSv1."), "came in over TLS: {tls}");
    assert_eq!(user, USER, "came in authenticated");
    assert_eq!(smtp.auth_attempts(), [format!("ok {USER}")]);
}

#[tokio::test]
async fn a_mail_arrives_over_implicit_tls_checked_against_the_configured_server_name() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("implicit", &ca, Some((USER, PASSWORD)));
    let to = recipient("implicit");
    // Reached by address, checked against the other name its certificate carries.
    let settings = EmailSettings {
        smtp_tls_server_name: Some("localhost".into()),
        ..secured(&smtp, SmtpTls::Implicit, Some(&ca), PASSWORD)
    };

    send_one(&settings, &to)
        .await
        .expect("the server takes the mail");

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let (tls, user) = session_of(&mails[0]);
    assert!(tls.starts_with("TLSv1."), "came in over TLS: {tls}");
    assert_eq!(user, USER);
}

#[tokio::test]
async fn a_wrong_password_is_an_outage_naming_the_settings_and_never_the_password() {
    spine_kit::testing::init_test_log();
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));
    let db = fresh_database(Backend::Sqlite).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let store = EmailStore::new(Outbox::new(pool.clone(), backend).await.unwrap())
        .await
        .unwrap();
    let mailer = mailer::from_settings(
        &secured(&smtp, SmtpTls::Starttls, Some(&ca), WRONG_PASSWORD),
        4,
    )
    .unwrap();
    let from: Mailbox = "Spine Shop <orders@spine.local>".parse().unwrap();
    let handler = OrderMails::new(store, Arc::clone(&mailer), from);
    let to = recipient("wrong-password");
    let fact = OrderConfirmed::of(&placed(&to));

    let outcome = handler.handle(&record_of(&fact, 1)).await;

    let Err(HandlerError::Unavailable(err)) = outcome else {
        panic!("wrong credentials are an outage, not poison: {outcome:?}");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains("SMTP authentication failed")
            && message.contains("email.smtp_username")
            && message.contains("email.smtp_password"),
        "{message}"
    );
    assert!(!message.contains(WRONG_PASSWORD), "{message}");
    assert!(!format!("{err:?}").contains(WRONG_PASSWORD), "{err:?}");
    assert_eq!(
        smtp.auth_attempts(),
        [format!("rejected {USER}")],
        "the server saw the attempt"
    );
    assert!(smtp.all_messages().is_empty(), "nothing was sent");
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sent_emails")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "nothing was recorded as sent");
}

/// The check, through the real runner with a budget of one attempt: the record is
/// retried (the server sees AUTH again and again) and never dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_with_a_wrong_password_retries_and_dead_letters_nothing() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));
    let settings = secured(&smtp, SmtpTls::Starttls, Some(&ca), WRONG_PASSWORD);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.email = EmailSettings {
            consumer_group: s.email.consumer_group.clone(),
            ..settings
        };
        s.kafka.consumer.retry.max_attempts = 1;
        s.kafka.consumer.retry.max_backoff = Duration::from_millis(200);
    })
    .await;
    let to = recipient("wrong-password-service");

    let confirmed = app.confirm(&to).await;

    // Past the one-attempt budget: three refused logins on this record (the consumer starts
    // at the earliest offset, so other tests' records may be tried too; all fail alike).
    let deadline = Instant::now() + Duration::from_secs(60);
    while smtp.auth_attempts().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let attempts = smtp.auth_attempts();
    assert!(attempts.len() >= 3, "retried: {attempts:?}");
    assert!(
        attempts.iter().all(|a| *a == format!("rejected {USER}")),
        "{attempts:?}"
    );
    assert!(smtp.all_messages().is_empty(), "nothing was sent");
    assert_eq!(app.sent_for(confirmed.order_id).await, 0);
    let dlq = format!("{}.dlq", app.settings.email.consumer_group);
    let dead = facts_of(&app.settings.kafka, &dlq, confirmed.order_id, 0);
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_mails_over_starttls_with_auth_and_emits_email_sent() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));
    let settings = secured(&smtp, SmtpTls::Starttls, Some(&ca), PASSWORD);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.email = EmailSettings {
            consumer_group: s.email.consumer_group.clone(),
            ..settings
        };
    })
    .await;
    let to = recipient("tls-service");

    let confirmed = app.confirm(&to).await;

    let mails = smtp.wait_for(&to, 1).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let (tls, user) = session_of(&mails[0]);
    assert!(tls.starts_with("TLSv1."), "came in over TLS: {tls}");
    assert_eq!(user, USER);
    assert_eq!(
        app.wait_for_email_sent(confirmed.order_id, 1).await.len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_an_outage_naming_the_setting() {
    let ca = TestCa::new();
    // Plain SMTP only: no STARTTLS in its EHLO answer (and AUTH only over TLS, so none).
    let smtp = SmtpServer::start_secured("none", &ca, Some((USER, PASSWORD)));
    let to = recipient("no-starttls");

    let err = send_one(&secured(&smtp, SmtpTls::Starttls, Some(&ca), PASSWORD), &to)
        .await
        .unwrap_err();

    assert_outage(&err, &["does not offer STARTTLS", "email.smtp_tls"], &smtp);
    assert!(
        smtp.auth_attempts().is_empty(),
        "no credentials went out in clear"
    );
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_the_handshake_as_an_outage() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));
    let to = recipient("unknown-ca");

    // Without email.smtp_ca_file only the built-in public roots are trusted.
    let err = send_one(&secured(&smtp, SmtpTls::Starttls, None, PASSWORD), &to)
        .await
        .unwrap_err();

    assert_outage(&err, &["TLS handshake", "email.smtp_ca_file"], &smtp);
    assert!(
        smtp.auth_attempts().is_empty(),
        "no credentials went to an unverified server"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_the_handshake_as_an_outage() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("implicit", &ca, Some((USER, PASSWORD)));
    let settings = EmailSettings {
        smtp_tls_server_name: Some("smtp.example.com".into()),
        ..secured(&smtp, SmtpTls::Implicit, Some(&ca), PASSWORD)
    };

    let err = send_one(&settings, &recipient("other-name"))
        .await
        .unwrap_err();

    assert_outage(
        &err,
        &[
            "TLS handshake with smtp.example.com",
            "email.smtp_tls_server_name",
        ],
        &smtp,
    );
    assert!(smtp.auth_attempts().is_empty());
}

#[tokio::test]
async fn implicit_tls_to_a_plain_port_fails_the_handshake_as_an_outage() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_secured("none", &ca, None);

    // The server greets in plain text; the client expected a TLS handshake.
    let err = send_one(
        &secured(&smtp, SmtpTls::Implicit, Some(&ca), PASSWORD),
        &recipient("implicit-to-plain"),
    )
    .await
    .unwrap_err();

    assert_outage(&err, &["TLS handshake", "email.smtp_tls = implicit"], &smtp);
}

#[tokio::test]
async fn credentials_over_plain_smtp_to_a_server_offering_auth_only_over_tls_name_the_setting() {
    let ca = TestCa::new();
    // STARTTLS offered, AUTH only after it; the client was told not to use TLS.
    let smtp = SmtpServer::start_secured("starttls", &ca, Some((USER, PASSWORD)));

    let err = send_one(
        &secured(&smtp, SmtpTls::None, None, PASSWORD),
        &recipient("plain-auth"),
    )
    .await
    .unwrap_err();

    assert_outage(
        &err,
        &["no AUTH mechanism", "email.smtp_tls (is none"],
        &smtp,
    );
    assert!(
        smtp.auth_attempts().is_empty(),
        "no credentials went out in clear"
    );
}

#[test]
fn misconfigured_credentials_or_ca_file_stop_the_startup_naming_the_setting() {
    let ca = TestCa::new();
    let base = EmailSettings {
        transport: TransportKind::Smtp,
        smtp_tls: Some(SmtpTls::Starttls),
        ..EmailSettings::default()
    };
    let error = |settings: EmailSettings| match mailer::from_settings(&settings, 4) {
        Ok(_) => panic!("accepted"),
        Err(err) => format!("{err:#}"),
    };

    let half = error(EmailSettings {
        smtp_username: Some(USER.into()),
        ..base.clone()
    });
    assert!(half.contains("email.smtp_password"), "{half}");

    let missing = error(EmailSettings {
        smtp_ca_file: Some(ca.ca_file().with_file_name("absent.pem")),
        ..base.clone()
    });
    assert!(missing.contains("email.smtp_ca_file"), "{missing}");

    let not_pem = error(EmailSettings {
        smtp_ca_file: Some(ca.server_key_file()),
        ..base.clone()
    });
    assert!(
        not_pem.contains("email.smtp_ca_file") && not_pem.contains("no PEM certificate"),
        "{not_pem}"
    );

    mailer::from_settings(
        &EmailSettings {
            smtp_ca_file: Some(ca.ca_file()),
            ..base
        },
        4,
    )
    .expect("a PEM CA file is taken");
}

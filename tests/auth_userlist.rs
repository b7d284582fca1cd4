//! The `auth.file` userlist: parsing, comments, quoting and file:line errors.

use pgcloak::auth::{AuthError, ScramVerifier, Userlist, Verifier};

fn scram(password: &str) -> String {
    ScramVerifier::from_password(password.as_bytes(), b"userlist-salt", 4096)
        .unwrap()
        .to_pg_string()
}

fn problems(text: &str) -> Vec<String> {
    match Userlist::parse(text, "auth.users") {
        Err(AuthError::Userlist(problems)) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected userlist errors, got {other:?}"),
    }
}

#[test]
fn userlist_parses_roles_comments_and_quotes() {
    let text = format!(
        "; pgbouncer style comment\n\
         # another comment\n\
         \n\
         \"alice\" \"{}\"\n\
         \t\"Mixed Case\"   \"{}\"   ; trailing comment\n\
         \"say \"\"hi\"\"\" \"md53175bce1d3201d16594cebf9d7eb3f9d\"\n",
        scram("a"),
        scram("b")
    );
    let list = Userlist::parse(&text, "auth.users").unwrap();
    assert_eq!(list.len(), 3);
    assert!(matches!(list.get("alice"), Some(Verifier::Scram(_))));
    assert!(list.get("Mixed Case").is_some());
    assert!(
        list.get("mixed case").is_none(),
        "role names are kept as is"
    );
    assert!(matches!(list.get("say \"hi\""), Some(Verifier::Md5(_))));
    assert_eq!(
        list.get("alice").unwrap(),
        &Verifier::parse(&scram("a")).unwrap()
    );
}

#[test]
fn userlist_errors_name_file_and_line() {
    let text = format!(
        "\"alice\" \"{}\"\n\
         \"bob\" \"hunter2\"\n\
         \"carol\"\n\
         \"dave \"{}\"\n\
         \"alice\" \"{}\"\n\
         eve \"{}\"\n\
         \"frank\" \"{}\" extra\n\
         \"\" \"{}\"\n\
         \"gina\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB\"\n",
        scram("a"),
        scram("d"),
        scram("a2"),
        scram("e"),
        scram("f"),
        scram("x"),
    );
    let found = problems(&text);
    let lines: Vec<&str> = found
        .iter()
        .map(|p| p.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "auth.users:2",
            "auth.users:3",
            "auth.users:4",
            "auth.users:5",
            "auth.users:6",
            "auth.users:7",
            "auth.users:8",
            "auth.users:9"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].contains("plaintext passwords are not accepted"),
        "{}",
        found[0]
    );
    assert!(
        found[3].contains("listed again (first on line 1)"),
        "{}",
        found[3]
    );
    assert!(found[7].contains("StoredKey"), "{}", found[7]);
}

#[test]
fn userlist_errors_never_quote_the_secret_field() {
    let found = problems("\"bob\" \"hunter2\"\n\"gina\" \"md5ZZZZ\"\n");
    for p in &found {
        assert!(!p.contains("hunter2"), "{p}");
        assert!(!p.contains("ZZZZ"), "{p}");
    }
    let err = Userlist::parse("\"bob\" \"hunter2\"", "f").unwrap_err();
    assert!(!format!("{err:?}").contains("hunter2"));
    assert!(!err.client_message("bob").contains("hunter2"));
}

#[test]
fn empty_userlist_is_valid_and_debug_hides_verifiers() {
    let list = Userlist::parse("# nothing\n", "f").unwrap();
    assert!(list.is_empty());
    let list = Userlist::parse(&format!("\"alice\" \"{}\"", scram("a")), "f").unwrap();
    let shown = format!("{list:?}");
    assert_eq!(shown, "Userlist { roles: 1 }");
}

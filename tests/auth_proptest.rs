//! Random and mutated input never panics any auth parser or state machine.

use pgcloak::auth::md5::verify_md5_response;
use pgcloak::auth::{
    tls_server_end_point, ChannelBinding, ChannelBindingMode, ClientSecret, Md5Verifier,
    ScramClient, ScramServer, ScramVerifier, ServerCredential, Userlist, Verifier, SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
};
use proptest::prelude::*;
use zeroize::Zeroizing;

fn verifier() -> ScramVerifier {
    ScramVerifier::from_parts(4096, b"salt".to_vec(), [1; 32], [2; 32]).unwrap()
}

fn binding(choice: u8) -> ChannelBinding {
    match choice % 3 {
        0 => ChannelBinding::Plain,
        1 => ChannelBinding::Tls {
            server_end_point: None,
        },
        _ => ChannelBinding::Tls {
            server_end_point: Some(vec![7; 32]),
        },
    }
}

/// SCRAM-looking text: attribute soup built from the grammar's pieces.
fn scramish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("n,,".to_string()),
        Just("y,,".to_string()),
        Just("p=tls-server-end-point,,".to_string()),
        Just("p=".to_string()),
        Just("n=".to_string()),
        Just("r=".to_string()),
        Just("c=".to_string()),
        Just("p=".to_string()),
        Just("m=".to_string()),
        Just("a=".to_string()),
        Just(",".to_string()),
        Just("biws".to_string()),
        "[A-Za-z0-9+/=]{0,48}",
        "\\PC{0,8}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat().into_bytes())
}

fn any_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..1500), scramish()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn server_client_first_never_panics(msg in any_message(), cb in any::<u8>(), plus in any::<bool>()) {
        let mech = if plus { SCRAM_SHA_256_PLUS } else { SCRAM_SHA_256 };
        let server = ScramServer::new(ServerCredential::Real(verifier()), binding(cb));
        let _ = server.client_first(mech, &msg);
    }

    #[test]
    fn server_client_final_never_panics(
        msg in any_message(),
        cb in any::<u8>(),
        fake in any::<bool>(),
    ) {
        let credential = if fake {
            ServerCredential::Fake(verifier())
        } else {
            ServerCredential::Real(verifier())
        };
        let server = ScramServer::new(credential, binding(cb));
        let gs2 = if cb % 3 == 2 { "p=tls-server-end-point,," } else { "n,," };
        let mech = if cb % 3 == 2 { SCRAM_SHA_256_PLUS } else { SCRAM_SHA_256 };
        let first = server
            .client_first(mech, format!("{gs2}n=,r=abc").as_bytes())
            .unwrap();
        // A mutated but well-formed-looking final, and raw noise.
        let nonce = std::str::from_utf8(first.message()).unwrap()
            .split(',').next().unwrap().to_string();
        let mut shaped = format!("c=biws,{nonce},p=").into_bytes();
        shaped.extend_from_slice(&msg);
        prop_assert!(first.client_final(&shaped).is_err());
        let server = ScramServer::new(ServerCredential::Real(verifier()), binding(cb));
        let first = server.client_first(mech, format!("{gs2}n=,r=abc").as_bytes()).unwrap();
        let _ = first.client_final(&msg);
    }

    #[test]
    fn client_never_panics_on_upstream_messages(
        first_msg in any_message(),
        final_msg in any_message(),
        pass_through in any::<bool>(),
    ) {
        let secret = if pass_through {
            let key = pgcloak::auth::PassThroughKey::without_server_key(
                pgcloak::auth::scram::SecretKey::from_bytes([5; 32]), b"salt".to_vec(), 4096);
            ClientSecret::PassThrough(key)
        } else {
            ClientSecret::Password(Zeroizing::new(b"pw".to_vec()))
        };
        let client = ScramClient::start_with_nonce(
            secret, &ChannelBinding::Plain, ChannelBindingMode::Prefer, &[SCRAM_SHA_256], "abc",
        ).unwrap();
        // Prefix the real nonce sometimes so parsing goes deeper.
        let mut deeper = b"r=abcdef,s=c2FsdA==,i=".to_vec();
        deeper.extend_from_slice(&first_msg);
        let _ = ScramClient::start_with_nonce(
            ClientSecret::Password(Zeroizing::new(b"pw".to_vec())),
            &ChannelBinding::Plain, ChannelBindingMode::Prefer, &[SCRAM_SHA_256], "abc",
        ).unwrap().server_first(&deeper);
        if let Ok(fin) = client.server_first(&first_msg) {
            let _ = fin.server_final(&final_msg);
        }
    }

    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Verifier::parse(&text);
        let _ = Verifier::parse(&format!("SCRAM-SHA-256${text}"));
        let _ = Userlist::parse(&text, "f");
        let _ = Userlist::parse(&format!("\"r\" \"{text}"), "f");
        let _ = tls_server_end_point(&bytes);
        let stored = Verifier::Md5(Md5Verifier::from_password(b"x", "r"));
        let _ = verify_md5_response(&stored, &[0; 4], &bytes);
    }
}

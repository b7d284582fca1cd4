//! Masks: what a `masked` reader sees instead of the plaintext.
//!
//! A mask works on the canonical text form of the value, counts Unicode scalar
//! values (never bytes) and never panics, whatever the input. A masked value is
//! always reported to the client as `text`, whatever the column's logical type.
//! Policy rule: a mask must hide something, so a value no longer than the kept
//! part is filled entirely. The pseudonym token is computed by the crypto module
//! (keyed HMAC); this module only asks for it, so no key ever reaches here.

use super::model::Mask;

/// What the email mask puts in place of the local part after its first character.
const EMAIL_HIDDEN: &str = "***";
/// The fill the email mask uses when the value is not an address at all.
const EMAIL_FILL: char = '*';

/// Applies `mask` to `plaintext`. `pseudonym` is called only for [`Mask::Pseudonym`]
/// and returns the keyed token for this value.
pub fn apply_mask(mask: &Mask, plaintext: &str, pseudonym: impl FnOnce(&str) -> String) -> String {
    match mask {
        Mask::KeepFirst { n, fill } => keep_first(plaintext, *n, *fill),
        Mask::KeepLast { n, fill } => keep_last(plaintext, *n, *fill),
        Mask::Email => email(plaintext),
        Mask::Fixed(text) => text.clone(),
        Mask::Pseudonym => pseudonym(plaintext),
    }
}

fn keep_first(s: &str, n: usize, fill: char) -> String {
    let total = s.chars().count();
    if total <= n {
        return fill_all(total, fill);
    }
    let mut out = String::with_capacity(s.len());
    out.extend(s.chars().take(n));
    out.extend(std::iter::repeat_n(fill, total - n));
    out
}

fn keep_last(s: &str, n: usize, fill: char) -> String {
    let total = s.chars().count();
    if total <= n {
        return fill_all(total, fill);
    }
    let mut out = String::with_capacity(s.len());
    out.extend(std::iter::repeat_n(fill, total - n));
    out.extend(s.chars().skip(total - n));
    out
}

fn email(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            let mut out = String::with_capacity(s.len());
            out.extend(local.chars().next());
            out.push_str(EMAIL_HIDDEN);
            out.push('@');
            out.push_str(domain);
            out
        }
        None => fill_all(s.chars().count(), EMAIL_FILL),
    }
}

fn fill_all(count: usize, fill: char) -> String {
    std::iter::repeat_n(fill, count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn no_pseudonym(_: &str) -> String {
        unreachable!("only the pseudonym mask asks for a token")
    }

    #[test]
    fn keep_first_counts_unicode_characters_of_vietnamese_names() {
        let m = Mask::KeepFirst { n: 2, fill: '*' };
        assert_eq!(
            apply_mask(&m, "Nguyễn Văn An", no_pseudonym),
            "Ng***********"
        );
    }

    #[test]
    fn keep_last_shows_the_end_of_a_phone_number() {
        let m = Mask::KeepLast { n: 3, fill: '*' };
        assert_eq!(apply_mask(&m, "0912345567", no_pseudonym), "*******567");
    }

    #[test]
    fn keep_last_uses_the_configured_fill_and_counts_chars() {
        let m = Mask::KeepLast { n: 2, fill: '•' };
        assert_eq!(apply_mask(&m, "Trần Thị Ánh", no_pseudonym), "••••••••••nh");
    }

    #[test]
    fn values_no_longer_than_the_kept_part_are_filled_entirely() {
        let m = Mask::KeepLast { n: 3, fill: '*' };
        assert_eq!(apply_mask(&m, "567", no_pseudonym), "***");
        assert_eq!(apply_mask(&m, "", no_pseudonym), "");
        let m = Mask::KeepFirst { n: 4, fill: '#' };
        assert_eq!(apply_mask(&m, "ab", no_pseudonym), "##");
    }

    #[test]
    fn email_keeps_first_letter_and_domain() {
        assert_eq!(
            apply_mask(&Mask::Email, "alice@example.com", no_pseudonym),
            "a***@example.com"
        );
        assert_eq!(
            apply_mask(&Mask::Email, "ánh@ví.vn", no_pseudonym),
            "á***@ví.vn"
        );
        assert_eq!(
            apply_mask(&Mask::Email, "@example.com", no_pseudonym),
            "***@example.com"
        );
        // The domain is taken after the last '@' (quoted local parts may contain '@').
        assert_eq!(
            apply_mask(&Mask::Email, "\"a@b\"@example.com", no_pseudonym),
            "\"***@example.com"
        );
    }

    #[test]
    fn email_without_at_sign_is_filled_entirely() {
        assert_eq!(
            apply_mask(&Mask::Email, "not-an-email", no_pseudonym),
            "************"
        );
    }

    #[test]
    fn fixed_ignores_the_value() {
        let m = Mask::Fixed("REDACTED".into());
        assert_eq!(apply_mask(&m, "anything", no_pseudonym), "REDACTED");
    }

    #[test]
    fn pseudonym_asks_the_closure_for_the_token() {
        let out = apply_mask(&Mask::Pseudonym, "alice", |p| format!("tok:{}", p.len()));
        assert_eq!(out, "tok:5");
    }

    fn any_mask() -> impl Strategy<Value = Mask> {
        prop_oneof![
            (0usize..40, any::<char>()).prop_map(|(n, fill)| Mask::KeepFirst { n, fill }),
            (0usize..40, any::<char>()).prop_map(|(n, fill)| Mask::KeepLast { n, fill }),
            Just(Mask::Email),
            ".{0,10}".prop_map(Mask::Fixed),
            Just(Mask::Pseudonym),
        ]
    }

    proptest! {
        #[test]
        fn masks_never_panic_on_any_unicode_input(mask in any_mask(), s in "\\PC*|.*") {
            let _ = apply_mask(&mask, &s, |p| p.chars().rev().collect());
        }

        #[test]
        fn keep_masks_preserve_char_count_and_reveal_at_most_n(n in 0usize..20, s in ".*") {
            let total = s.chars().count();
            for mask in [Mask::KeepFirst { n, fill: '*' }, Mask::KeepLast { n, fill: '*' }] {
                let out = apply_mask(&mask, &s, no_pseudonym);
                prop_assert_eq!(out.chars().count(), total);
                let kept = out.chars().zip(s.chars()).filter(|(o, i)| o == i && *o != '*').count();
                prop_assert!(kept <= n);
                if total <= n {
                    prop_assert!(out.chars().all(|c| c == '*'));
                }
            }
        }

        #[test]
        fn email_mask_never_shows_more_than_one_local_char(local in "[^@]{0,20}", domain in "[^@]{0,20}") {
            let out = apply_mask(&Mask::Email, &format!("{local}@{domain}"), no_pseudonym);
            let expected: String = local.chars().take(1).chain("***@".chars()).chain(domain.chars()).collect();
            prop_assert_eq!(out, expected);
        }
    }
}

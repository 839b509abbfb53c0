//! The naming rule for events: a name states a fact, `<Subject><PastParticiple>`.
//!
//! `OrderPlaced` and `EmailSent` are facts; `CreateInvoice`, `SendEmail` and `ProcessOrder` are
//! commands, which belong in an API call, not on a topic other services react to.

/// Verbs that, as a name's first word, make it read as an order to do something.
pub const COMMAND_VERBS: &[&str] = &[
    "Add",
    "Apply",
    "Approve",
    "Assign",
    "Book",
    "Calculate",
    "Cancel",
    "Charge",
    "Check",
    "Close",
    "Compute",
    "Confirm",
    "Create",
    "Delete",
    "Dispatch",
    "Do",
    "Emit",
    "Execute",
    "Fetch",
    "Fulfil",
    "Fulfill",
    "Generate",
    "Get",
    "Handle",
    "Insert",
    "Load",
    "Make",
    "Modify",
    "Notify",
    "Open",
    "Pay",
    "Perform",
    "Place",
    "Post",
    "Process",
    "Publish",
    "Put",
    "Refund",
    "Register",
    "Reject",
    "Release",
    "Remove",
    "Request",
    "Reserve",
    "Run",
    "Save",
    "Schedule",
    "Send",
    "Set",
    "Ship",
    "Start",
    "Stop",
    "Store",
    "Submit",
    "Sync",
    "Trigger",
    "Update",
    "Upsert",
    "Validate",
];

/// Past participles that don't end in "ed".
pub const IRREGULAR_PAST_PARTICIPLES: &[&str] = &[
    "Begun",
    "Bought",
    "Brought",
    "Built",
    "Caught",
    "Chosen",
    "Done",
    "Drawn",
    "Found",
    "Given",
    "Gone",
    "Held",
    "Kept",
    "Known",
    "Laid",
    "Left",
    "Lost",
    "Made",
    "Met",
    "Paid",
    "Read",
    "Rebuilt",
    "Redone",
    "Resent",
    "Resold",
    "Seen",
    "Sent",
    "Set",
    "Shown",
    "Shut",
    "Sold",
    "Split",
    "Spent",
    "Taken",
    "Thrown",
    "Told",
    "Undone",
    "Withdrawn",
    "Won",
    "Written",
];

/// Checks that `name` reads as a fact: CamelCase ASCII, at least a subject and a verb, the last
/// word a past participle and the first word no command verb. The error says why not.
pub fn check_event_name(name: &str) -> Result<(), String> {
    if !name.starts_with(|c: char| c.is_ascii_uppercase())
        || !name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "`{name}` is not CamelCase ASCII letters and digits"
        ));
    }
    let words = camel_case_words(name);
    let (first, last) = (words[0], words[words.len() - 1]);
    let mut problems = Vec::new();
    if COMMAND_VERBS.contains(&first) {
        problems.push(format!("it starts with the command verb `{first}`"));
    }
    if words.len() < 2 {
        problems.push("it has no subject: name what the fact is about, then what happened".into());
    } else if !is_past_participle(last) {
        problems.push(format!("its last word `{last}` is not in the past tense"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`{name}` reads as a command, not a fact: {}; name facts <Subject><PastParticiple>, \
             e.g. OrderPlaced, EmailSent",
            problems.join(", and ")
        ))
    }
}

/// Splits CamelCase into words: `StockReservationFailed` → `Stock`, `Reservation`, `Failed`.
/// Digits stay with the word before them; acronyms (`SMSSent`) split before their last
/// capital when a lowercase letter follows.
pub fn camel_case_words(name: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = name.char_indices().collect();
    let mut words = Vec::new();
    let mut start = 0;
    for i in 1..chars.len() {
        let (at, c) = chars[i];
        let prev = chars[i - 1].1;
        let next_is_lower = chars
            .get(i + 1)
            .is_some_and(|(_, n)| n.is_ascii_lowercase());
        let boundary = c.is_ascii_uppercase()
            && (prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_is_lower));
        if boundary {
            words.push(&name[start..at]);
            start = at;
        }
    }
    words.push(&name[start..]);
    words
}

fn is_past_participle(word: &str) -> bool {
    (word.len() > 2 && word.ends_with("ed")) || IRREGULAR_PAST_PARTICIPLES.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spine_event_name_reads_as_a_fact() {
        for name in [
            "OrderPlaced",
            "OrderConfirmed",
            "OrderRejected",
            "StockReserved",
            "StockReservationFailed",
            "EmailSent",
            "InvoicePaid",
            "SMSSent",
        ] {
            assert_eq!(check_event_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn command_names_are_rejected_with_the_reason() {
        let error = check_event_name("CreateInvoice").unwrap_err();
        assert!(error.contains("command verb `Create`"), "{error}");
        assert!(
            error.contains("`Invoice` is not in the past tense"),
            "{error}"
        );
        for name in ["SendEmail", "ProcessOrder", "ReserveStock", "UpdateStock"] {
            assert!(check_event_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn a_name_without_a_subject_or_in_the_wrong_case_is_rejected() {
        assert!(
            check_event_name("Shipped")
                .unwrap_err()
                .contains("no subject")
        );
        assert!(check_event_name("orderPlaced").is_err());
        assert!(check_event_name("Order_Placed").is_err());
    }

    #[test]
    fn camel_case_splits_into_words() {
        assert_eq!(
            camel_case_words("StockReservationFailed"),
            ["Stock", "Reservation", "Failed"]
        );
        assert_eq!(camel_case_words("SMSSent"), ["SMS", "Sent"]);
        assert_eq!(camel_case_words("Order2Placed"), ["Order2", "Placed"]);
        assert_eq!(camel_case_words("Order"), ["Order"]);
    }
}

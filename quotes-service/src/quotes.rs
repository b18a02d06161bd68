//! The quotes, and the JSON answer that carries one.
//!
//! Short sayings about building software, each with who said it, handed out
//! round-robin: consecutive calls to one instance give different quotes,
//! which makes load balancing and the breaker's fallback easy to see.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// (quote, who said or wrote it)
const QUOTES: &[(&str, &str)] = &[
    ("Premature optimization is the root of all evil.", "Donald Knuth"),
    ("Beware of bugs in the above code; I have only proved it correct, not tried it.", "Donald Knuth"),
    ("Simplicity is prerequisite for reliability.", "Edsger W. Dijkstra"),
    ("Program testing can be used to show the presence of bugs, but never to show their absence.", "Edsger W. Dijkstra"),
    ("Adding manpower to a late software project makes it later.", "Fred Brooks"),
    ("Plan to throw one away; you will, anyhow.", "Fred Brooks"),
    ("The bearing of a child takes nine months, no matter how many women are assigned.", "Fred Brooks"),
    ("Talk is cheap. Show me the code.", "Linus Torvalds"),
    ("Given enough eyeballs, all bugs are shallow.", "Eric S. Raymond"),
    ("Make it work, make it right, make it fast.", "Kent Beck"),
    ("Any fool can write code that a computer can understand. Good programmers write code that humans can understand.", "Martin Fowler"),
    ("Debugging is twice as hard as writing the code in the first place.", "Brian Kernighan"),
    ("Controlling complexity is the essence of computer programming.", "Brian Kernighan"),
    ("Programs must be written for people to read, and only incidentally for machines to execute.", "Harold Abelson"),
    ("The best way to predict the future is to invent it.", "Alan Kay"),
    ("Simple things should be simple, complex things should be possible.", "Alan Kay"),
    ("A distributed system is one in which the failure of a computer you didn't even know existed can render your own computer unusable.", "Leslie Lamport"),
    ("There are only two hard things in Computer Science: cache invalidation and naming things.", "Phil Karlton"),
    ("Be conservative in what you do, be liberal in what you accept from others.", "Jon Postel"),
    ("Everything fails, all the time.", "Werner Vogels"),
    ("Organizations which design systems are constrained to produce designs which are copies of the communication structures of these organizations.", "Melvin Conway"),
    ("Clear is better than clever.", "Rob Pike"),
    ("Don't communicate by sharing memory, share memory by communicating.", "Rob Pike"),
    ("A little copying is better than a little dependency.", "Rob Pike"),
    ("Errors are values.", "Rob Pike"),
    ("When in doubt, use brute force.", "Ken Thompson"),
    ("One of my most productive days was throwing away 1000 lines of code.", "Ken Thompson"),
    ("The cheapest, fastest, and most reliable components are those that aren't there.", "Gordon Bell"),
    ("Walking on water and developing software from a specification are easy if both are frozen.", "Edward V. Berard"),
    ("Measuring programming progress by lines of code is like measuring aircraft building progress by weight.", "Bill Gates"),
    ("The question of whether a computer can think is no more interesting than the question of whether a submarine can swim.", "Edsger W. Dijkstra"),
    ("Inside every large program, there is a small program trying to get out.", "C. A. R. Hoare"),
];

/// The answer of `/api/quote`, shaped as the blog's Java service's.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuoteAnswer {
    pub quote: String,
    /// `<this instance's IPv4>:<port>`: which replica answered.
    pub ip_address: String,
    pub language: &'static str,
}

/// Hands out the quotes in turn.
#[derive(Debug, Default)]
pub struct Quotes {
    next: AtomicUsize,
}

impl Quotes {
    pub fn next(&self, ip_address: &str) -> QuoteAnswer {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % QUOTES.len();
        let (quote, author) = QUOTES[turn];
        QuoteAnswer {
            quote: format!("{quote} ({author})"),
            ip_address: ip_address.to_owned(),
            language: "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_has_the_blogs_three_fields() {
        let answer = Quotes::default().next("10.0.1.5:8080");
        let json: serde_json::Value = serde_json::to_value(&answer).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["ipAddress", "language", "quote"]);
        assert_eq!(json["ipAddress"], "10.0.1.5:8080");
        assert_eq!(json["language"], "en");
        assert_eq!(
            json["quote"],
            "Premature optimization is the root of all evil. (Donald Knuth)"
        );
    }

    #[test]
    fn quotes_come_in_turn_and_wrap_around() {
        let quotes = Quotes::default();
        let first: Vec<String> = (0..QUOTES.len()).map(|_| quotes.next("").quote).collect();
        let distinct: std::collections::BTreeSet<&String> = first.iter().collect();
        assert_eq!(distinct.len(), QUOTES.len());
        assert_eq!(quotes.next("").quote, first[0]);
    }

    #[test]
    fn no_quote_is_the_accountservices_fallback() {
        // The lab tells a live quote from the breaker's by the text too.
        assert!(QUOTES
            .iter()
            .all(|(q, _)| !q.contains("May the source be with you")));
        assert!(QUOTES.len() >= 24);
    }
}

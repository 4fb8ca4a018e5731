"""Generation routes: each module supplies parsing, keying and rendering for one family."""

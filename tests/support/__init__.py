"""What the tests share: the in-process app client, image helpers, error-shape checks."""

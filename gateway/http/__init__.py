"""HTTP plumbing shared by every route: forwarding upstream answers, noticing callers that
hang up, the request-size and access-log middleware."""

"""The dedicated Exchange hybrid application in Entra ID, kept in step with the Auth
Certificate (issue 13).

Since 31 October 2025 hybrid Free/Busy, MailTips and photos go through a dedicated
application in the customer's tenant, and the public keys of the current and next Auth
Certificate must be among its `keyCredentials`: a rotation that publishes a certificate
the application does not hold breaks hybrid. This room holds everything about it that is
not Exchange:

- `graph_client`  Microsoft Graph: msal tokens, one HTTP client that honours Retry-After,
                  errors as one line with Graph's own reason.
- `keys`          a keyCredential as exauth reads it (its thumbprint computed from the
                  certificate itself), and the PATCH bodies that add or remove one while
                  sending every other key back unchanged, and the check afterwards that
                  nothing else went.
- `findings`      what the keys mean for the org (the `hybrid_app` status section and its
                  finding codes).

Only orgs that are hybrid and have `[org.hybrid_app]` configured ever call Graph.
"""

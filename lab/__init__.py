"""A simulated Exchange org served over real WS-Management + PowerShell Remoting.

The lab is an independent implementation: it imports nothing from `bot`, `workers` or
`config`, so the product's client is tested against something it did not write.

Modules, outermost first (transport is kept apart from the org, as psrpcore keeps the
protocol apart from I/O):

- `serve`     start/stop a lab (`start()` -> `LabHandle`), the `exauth lab serve` body,
              the JSON ready line and `--write-config`.
- `http/`     the HTTP server: `listener` (port, TLS, connections, shells),
              `request_handler` (reading and routing), `wsman_endpoint` (per server and
              endpoint: transport faults, latency), `control_api` (`/_lab/`), `basic_auth`.
- `wsman/`    WS-Management SOAP messages (Create, Command, Send, Receive, Signal,
              Delete, faults) parsed and built without I/O: `vocabulary`,
              `request_parsing`, `envelope_writer`, `shell_responses`, `winrm_faults`.
- `psrp/`     one shell = one psrpcore `ServerRunspacePool`: `remote_shell` (the WS-Man
              side), `runspace_pool` (psrpcore's pool and its caches), `runs` (pipelines
              turned into `cmdlets.Invocation`s), `error_records`.
- `cmdlets/`  the commands each endpoint serves, with real-Exchange semantics: the
              parameter binder, the pipeline runner, cmdlets by area, the command table.
- `objects/`  psrpcore objects shaped like real Exchange/IIS output (type names,
              Props vs MS placement as in the CLIXML fixtures), one module per kind of
              output, built from templates (`templates`) in the org's AD context.
- `org/`      the org model: `Org` (servers, stores, AuthConfig, call log, virtual clock;
              thread-safe), its servicelets (replication, AuthAdmin), IIS rules,
              endpoint health, faults, and the state JSON.
- `scenario`  scenario TOML files -> validated `Scenario` (errors name file and key).
- `toml_schema` the scenario file's pydantic models; `toml_checks` their value checks
              and the one-line error ("<file>: <key path>: <what is wrong>").
- `certs`     real X.509 certificates made with `cryptography`.
- `graph/`    the Microsoft Graph stand-in's Entra tenant (`directory`: applications,
              keyCredentials, sign-in, tokens, faults), served over HTTPS with the lab's
              own CA by `http/graph_listener` and `http/graph_endpoint`.
"""

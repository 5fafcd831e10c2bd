"""A simulated Exchange org served over real WS-Management + PowerShell Remoting.

The lab is an independent implementation: it imports nothing from `bot`, `workers` or
`config`, so the product's client is tested against something it did not write.

Modules, outermost first (transport is kept apart from the org, as psrpcore keeps the
protocol apart from I/O):

- `serve`     start/stop a lab (`start()` -> `LabHandle`), the `exauth lab serve` body,
              the JSON ready line and `--write-config`.
- `server`    the HTTP server: routing per server and endpoint, Basic auth, optional TLS,
              latency, transport faults, the control API under `/_lab/`.
- `wsman`     WS-Management SOAP messages (Create, Command, Send, Receive, Signal,
              Delete, faults) parsed and built without I/O.
- `psrp`      one shell = one psrpcore `ServerRunspacePool`; pipelines turned into
              `cmdlets.Invocation`s and their results into PSRP messages.
- `cmdlets/`  the commands each endpoint serves, with real-Exchange semantics: the
              parameter binder, the pipeline runner, cmdlets by area, the command table.
- `objects`   psrpcore objects shaped like real Exchange/IIS output (type names,
              Props vs MS placement as in the CLIXML fixtures).
- `org/`      the org model: `Org` (servers, stores, AuthConfig, call log, virtual clock;
              thread-safe), its servicelets (replication, AuthAdmin), IIS rules,
              endpoint health, faults, and the state JSON.
- `scenario`  scenario TOML files -> validated `Scenario` (errors name file and key).
- `toml_schema` the scenario file's pydantic models; `toml_checks` their value checks
              and the one-line error ("<file>: <key path>: <what is wrong>").
- `certs`     real X.509 certificates made with `cryptography`.
"""

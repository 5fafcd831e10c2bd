"""psrpcore objects shaped like real Exchange and IIS output.

The bot parses what pypsrp deserializes, so the lab's objects carry the type names
(`<TN>`) of real Exchange 2016/2019 output and put each property where real output puts
it: adapted properties in `<Props>`, extended/note properties in `<MS>` (compare the
CLIXML fixtures in `tests/fixtures/exchange-clixml/`). Where the real wire is
sparse the lab is sparse too: an `ExchangeCertificate` carries only `RawData` in Props
and Exchange's opaque `SerializationData` in MS, exactly as the fixtures show, so a client
that reads `Thumbprint` or `Status` off the object fails here as it would against real
Exchange; everything must be computed from RawData. (`PSComputerName`, `RunspaceId` and
`PSShowComputerName` in the fixtures are added by the PowerShell client, not sent.)

`SerializationData` starts with "#sig#" when serialization signing is on, as in the
signed fixtures; the rest is a placeholder, not a real BinaryFormatter payload.
Objects with no fixture (Get-IISSiteBinding's `Binding`, Export-ExchangeCertificate's
`BinaryFileDataObject`, Get-ExchangeDiagnosticInfo's result) follow what those commands
emit over PowerShell remoting as closely as known; their type names are best guesses.

Each module builds one kind of output: `certificate_objects`, `config_objects`
(AuthConfig, HybridConfiguration), `server_objects`, `iis_objects` and `custom_objects`
(Select-Object); they are made of `psobject_parts` in the `ad_context` of the org, with
the type names of `type_names`, and cached as `templates`. The names below are what the
cmdlets and the transport use.
"""

from lab.objects.ad_context import Context
from lab.objects.certificate_objects import (
    binary_file_data,
    certificate_to_string,
    exchange_certificate,
    store_certificate,
)
from lab.objects.config_objects import auth_config, evo_sts_auth_server, hybrid_configuration
from lab.objects.custom_objects import first_type_name, flattened, properties_of, selected
from lab.objects.iis_objects import site_binding, web_binding
from lab.objects.psobject_parts import serialization_data
from lab.objects.server_objects import diagnostic_info, exchange_server
from lab.objects.templates import STAMP_TEXT, Recipe, clixml_time, derived, recipe_of

__all__ = [
    "STAMP_TEXT", "Context", "Recipe", "auth_config", "binary_file_data",
    "certificate_to_string", "clixml_time", "derived", "diagnostic_info",
    "evo_sts_auth_server", "exchange_certificate", "exchange_server", "first_type_name",
    "flattened", "hybrid_configuration", "properties_of",
    "recipe_of", "selected", "serialization_data", "site_binding", "store_certificate",
    "web_binding",
]

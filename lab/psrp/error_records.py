"""PowerShell errors as PSRP carries them: error records, and which errors end an invocation.

An Exchange cmdlet's own failures are non-terminating (an error record, then Completed);
errors around a cmdlet end the whole invocation as Failed, as PowerShell's do.
"""

from __future__ import annotations

from typing import Any

from psrpcore import (
    ServerPipeline,
)
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PipelineState,
    PSInvocationState,
)

from lab import cmdlets

# Errors PowerShell raises before or around a cmdlet rather than from inside it: they end
# the whole invocation (PipelineState Failed, pypsrp `had_errors`). An Exchange cmdlet's own
# failures are non-terminating: an error record on the error stream, then Completed.
TERMINATING_EXCEPTIONS = frozenset({
    "System.Management.Automation.ParameterBindingException",
    "System.Management.Automation.CommandNotFoundException",
    "System.Management.Automation.Host.HostException",
    "System.Management.Automation.RemoteException",  # NoLanguage: script text refused
})


def is_terminating(error: cmdlets.CommandError) -> bool:
    return error.exception_type in TERMINATING_EXCEPTIONS


def error_record_parts(error: cmdlets.CommandError) -> dict[str, Any]:
    """Keyword arguments for `ServerPipeline.write_error` that mirror a .NET ErrorRecord.

    The exception carries the .NET type name chain so clients see e.g.
    `System.InvalidOperationException`; the category's Reason is the short type name, as
    PowerShell fills it.
    """
    exception_type = error.exception_type or "System.Exception"
    exception = NETException(Message=error.message, HResult=-2146233087)
    chain = [exception_type]
    for base in ("System.SystemException", "System.Exception", "System.Object"):
        if base not in chain:
            chain.append(base)
    exception.PSObject.type_names = chain
    try:
        category = ErrorCategory[error.category or "NotSpecified"]
    except KeyError:
        category = ErrorCategory.NotSpecified
    target = error.target
    return {
        "exception": exception,
        "category_info": ErrorCategoryInfo(
            Category=category,
            Reason=exception_type.rsplit(".", 1)[-1],
            TargetName=None if target is None else str(target),
            TargetType=None if target is None else "String",
        ),
        "target_object": target,
        "fully_qualified_error_id": error.error_id or exception_type,
    }


def fail_pipeline(pipeline: ServerPipeline, error: cmdlets.CommandError) -> None:
    """End the invocation as Failed with the error as its reason (MS-PSRP PIPELINE_STATE)."""
    parts = error_record_parts(error)
    record = ErrorRecord(
        Exception=parts["exception"],
        CategoryInfo=parts["category_info"],
        TargetObject=parts["target_object"],
        FullyQualifiedErrorId=parts["fully_qualified_error_id"],
    )
    pipeline.prepare_message(
        PipelineState(
            PipelineState=int(PSInvocationState.Failed), ExceptionAsErrorRecord=record
        )
    )
    pipeline.state = PSInvocationState.Failed


def internal_error(exc: Exception) -> dict[str, Any]:
    exception = NETException(Message=f"Internal lab error: {exc}", HResult=-2146233087)
    exception.PSObject.type_names = [
        "System.Management.Automation.RuntimeException",
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]
    return {
        "exception": exception,
        "category_info": ErrorCategoryInfo(
            Category=ErrorCategory.NotSpecified, Reason="RuntimeException"
        ),
        "fully_qualified_error_id": "LabInternalError",
    }

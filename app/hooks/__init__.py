"""Operator integration: event callbacks and the blocking publish/play auth hook.

Beside the flow: nothing in ingest, the hub, the ROI stage or the outputs imports this package.
The composition root subscribes :class:`~app.hooks.events.StreamEvents` to the hub's stream
listeners and the ROI stage's notifications, and hands :class:`~app.hooks.admission.Admission`
to every publish/play entry point as their :data:`app.auth.Admit`.
"""

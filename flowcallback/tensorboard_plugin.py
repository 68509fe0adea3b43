"""The "Flows" dashboard of TensorBoard: every flowcallback run under the logdir, each run's page, live.

Installed with the package through TensorBoard's plugin entry point (``setup.cfg``,
``[options.entry_points] tensorboard_plugins``), so that ``tensorboard --logdir logs`` shows it
whenever a run (a directory with flowcallback's ``run.json``) lies under ``logs``, at any depth up
to :data:`flowcallback.serving.MAX_DEPTH`, beside the Keras TensorBoard callback's own folders or
elsewhere.

The routes, under ``/data/plugin/flows/``:

- ``index.js``: the dashboard, an ES module (``flowcallback/templates/flows_dashboard.js``): the
  runs as a list (an unreadable one with its error), and the chosen run's page in a frame;
- ``runs``: the runs as JSON (:meth:`flowcallback.serving.RunSite.runs`);
- ``site/...``: the runs' pages and files, exactly as ``flowcallback serve`` serves them
  (:meth:`flowcallback.serving.RunSite.respond`): the run page drawn anew from the run loaded with
  the untrusted loader, with its live refresh; paths outside the logdir refused.

This module imports TensorBoard; nothing else in flowcallback imports this module.
"""
from __future__ import annotations

import json

from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from flowcallback.serving import RunSite

__all__ = ["FlowsPlugin"]

_SITE = "/site"


def _dashboard_js() -> str:
    from importlib.resources import files

    return files("flowcallback").joinpath("templates").joinpath("flows_dashboard.js").read_text(encoding="utf-8")


class FlowsPlugin(base_plugin.TBPlugin):
    """TensorBoard's "Flows" dashboard (``plugin_name = "flows"``).

    Parameters
    ----------
    context : tensorboard.plugins.base_plugin.TBContext
        Its ``logdir`` is searched for runs; with ``--logdir_spec`` (no single logdir) the
        dashboard stays inactive.
    """

    plugin_name = "flows"

    def __init__(self, context):
        logdir = getattr(context, "logdir", None)
        try:
            self._site = RunSite(logdir) if logdir else None
        except ValueError:  # the logdir is not a directory (yet)
            self._site = None
        self._logdir = logdir

    def _get_site(self):
        if self._site is None and self._logdir:
            try:
                self._site = RunSite(self._logdir)
            except ValueError:
                return None
        return self._site

    def get_plugin_apps(self):
        return {"/index.js": self._serve_js, "/runs": self._serve_runs, _SITE + "/*": self._serve_site}

    def is_active(self) -> bool:
        site = self._get_site()
        return bool(site is not None and site.run_paths())

    def frontend_metadata(self):
        # the run pages refresh themselves: TensorBoard's reload would only reset the chosen run
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Flows", disable_reload=True)

    @wrappers.Request.application
    def _serve_js(self, request):
        return wrappers.Response(_dashboard_js(), content_type="text/javascript; charset=utf-8",
                                 headers=[("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache")])

    @wrappers.Request.application
    def _serve_runs(self, request):
        site = self._get_site()
        runs = site.sets() + site.runs() if site is not None else []  # the pages comparing held-out sets first
        return wrappers.Response(json.dumps(runs), content_type="application/json",
                                 headers=[("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache")])

    @wrappers.Request.application
    def _serve_site(self, request):
        site = self._get_site()
        path = request.path  # percent-decoded once by the WSGI server
        at = path.find("/plugin/" + self.plugin_name + _SITE)
        rest = path[at + len("/plugin/" + self.plugin_name + _SITE):] if at >= 0 else ""
        if site is None:
            return wrappers.Response("no logdir\n", status=404, content_type="text/plain; charset=utf-8",
                                     headers=[("X-Content-Type-Options", "nosniff")])
        r = site.respond(rest or "/", method=request.method, if_none_match=request.headers.get("If-None-Match"))
        headers = list(r.headers)
        if r.header("Content-Length") is None:
            headers.append(("Content-Length", str(r.file_size if r.file is not None else len(r.body))))
        body = r.chunks() if request.method == "GET" else []
        return wrappers.Response(body, status=r.status, headers=headers, direct_passthrough=True)

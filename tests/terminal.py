"""Lines for the terminal from inside a test (timings of slow fixtures), past pytest's capture."""


def report(request, tag: str, line: str) -> None:
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture and reporter:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[{tag}] {line}")

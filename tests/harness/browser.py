"""Debian's Chromium, driven by selenium, for the live page's tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.harness.testbed import ROOT

# Headless, and quiet: without the background-networking flags Chromium
# keeps trying hosts this machine cannot reach.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)
ARTIFACTS = Path(os.environ.get("PROXYREFRESH_ARTIFACTS", ROOT / ".artifacts"))


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver "
                        "(make bootstrap does)", pytrace=False)  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

"""A real browser through the gateway, for tests/e2e_browser.rs: headless Chromium driven by
Selenium (WebDriver), signing in to MLflow's web UI on the dev provider's form.

  browser_flow.py BASE EXPERIMENT_ID EXPERIMENT_NAME RUN_ID RUN_NAME OUT_DIR

As dev-writer: sign in, see the experiment list, open the run and its artifact, sign out
(and land on the sign-in form again). As dev-reader: the same, then try to rename the
experiment from the UI and read the error the UI shows. Every step saves a screenshot in
OUT_DIR. Waits poll a condition with a deadline; nothing sleeps. Prints one JSON line with
what each step saw; exits non-zero (with a screenshot of the failing page) when a step's
condition never holds.
"""

import json
import os
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 60
ARTIFACT_TEXT = "written through Envoy by the e2e suite"
USERS = {
    "writer": ("dev-writer", "dev-writer-password"),
    "reader": ("dev-reader", "dev-reader-password"),
}


class Flow:
    def __init__(self, base, exp_id, exp_name, run_id, run_name, out):
        self.base, self.exp_id, self.exp_name = base, exp_id, exp_name
        self.run_id, self.run_name, self.out = run_id, run_name, out
        self.steps = []
        self.profile = tempfile.mkdtemp(prefix="hokusai-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
        # The machine has no network beyond loopback: nothing may phone home.
        for arg in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}",
            "--window-size=1400,900",
        ):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
        # An explicit driver path: Selenium Manager (which would download one) never runs.
        self.drv = webdriver.Chrome(service=Service(driver), options=opts)

    def close(self):
        try:
            self.drv.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def wait(self, what, condition):
        try:
            # React replaces elements as it renders: a stale one just means "look again".
            return WebDriverWait(
                self.drv,
                WAIT_S,
                poll_frequency=0.2,
                ignored_exceptions=[StaleElementReferenceException],
            ).until(lambda d: condition(d))
        except WebDriverException as e:
            self.shot(f"failed-{what}")
            raise SystemExit(
                f"browser step {what!r} never came true at {self.drv.current_url}: "
                f"{type(e).__name__}\n{self.body_text()[:2000]}"
            )

    def body_text(self):
        try:
            return self.drv.find_element(By.TAG_NAME, "body").text
        except WebDriverException:
            return ""

    def shot(self, name):
        path = os.path.join(self.out, f"{name}.png")
        self.drv.save_screenshot(path)
        return path

    def step(self, name, **facts):
        self.steps.append(
            {"step": name, "url": self.drv.current_url, "screenshot": self.shot(name), **facts}
        )

    def js_click(self, element):
        self.drv.execute_script("arguments[0].click();", element)

    def dismiss_guidance(self):
        # MLflow's UI shows a one-time guidance pop-over that lies across its buttons.
        for button in self.drv.find_elements(
            By.CSS_SELECTOR, "[data-component-id='mlflow.detect_issues.guidance.got_it']"
        ):
            try:
                self.js_click(button)
            except WebDriverException:
                pass

    def click_when(self, what, find):
        """Clicks (as a user would) the first element `find` returns, once there is one
        that nothing covers and React has not replaced in the meantime."""

        def attempt(d):
            try:
                found = [e for e in find(d) if e.is_displayed()]
                if not found:
                    return False
                found[0].click()
                return True
            except (StaleElementReferenceException, ElementClickInterceptedException):
                self.dismiss_guidance()
                return False

        self.wait(what, attempt)

    def mlflow_ui_shown(self, d):
        return d.current_url.startswith(f"{self.base}/mlflow/") and d.find_elements(
            By.CSS_SELECTOR, "[data-component-id='mlflow_header.toggle_sidebar_button']"
        )

    def sign_in(self, who, shot_form):
        user, password = USERS[who]
        self.drv.get(f"{self.base}/mlflow/")
        self.wait("sign-in form", lambda d: d.find_elements(By.ID, "username"))
        form_url = self.drv.current_url
        if shot_form:
            self.step("01-sign-in-form", form_url=form_url)
        self.drv.find_element(By.ID, "username").send_keys(user)
        self.drv.find_element(By.ID, "password").send_keys(password)
        self.drv.find_element(By.ID, "sign-in").click()
        self.wait(f"{who} signed in", self.mlflow_ui_shown)
        return form_url

    def experiments(self, name):
        self.drv.get(f"{self.base}/mlflow/#/experiments")
        self.wait(
            f"{name} experiment list",
            lambda d: d.find_elements(By.LINK_TEXT, self.exp_name),
        )
        self.step(name, listed=True)

    def run_and_artifact(self, run_shot, artifact_shot):
        self.drv.get(f"{self.base}/mlflow/#/experiments/{self.exp_id}/runs/{self.run_id}")
        self.wait("run page", lambda d: self.run_name in self.body_text())
        self.step(run_shot, run_name_shown=True)
        self.drv.get(
            f"{self.base}/mlflow/#/experiments/{self.exp_id}/runs/{self.run_id}/artifacts"
        )
        self.click_when(
            "artifact list",
            lambda d: d.find_elements(By.XPATH, "//*[normalize-space(text())='notes.txt']"),
        )
        self.wait("artifact preview", lambda d: ARTIFACT_TEXT in self.page_text_with_frames())
        self.step(artifact_shot, artifact_text_shown=True)

    def page_text_with_frames(self):
        text = self.body_text()
        for frame in self.drv.find_elements(By.TAG_NAME, "iframe"):
            try:
                self.drv.switch_to.frame(frame)
                text += "\n" + self.body_text()
            except WebDriverException:
                pass
            finally:
                self.drv.switch_to.default_content()
        return text

    def rename_refused(self, shot):
        self.drv.get(f"{self.base}/mlflow/#/experiments/{self.exp_id}")
        self.click_when(
            "experiment menu",
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=overflow-menu-trigger]"),
        )
        self.click_when(
            "edit menu item",
            lambda d: [
                m
                for m in d.find_elements(By.CSS_SELECTOR, "[role=menuitem]")
                if m.text.strip() == "Edit experiment"
            ],
        )
        new_name = f"{self.exp_name}-renamed-by-reader"

        def type_name(d):
            fields = d.find_elements(
                By.CSS_SELECTOR, "[data-component-id='mlflow.experiment.edit.name']"
            )
            try:
                field = next(f for f in fields if f.is_displayed() and f.is_enabled())
                # Typed as keystrokes into the focused field (React sees real input events),
                # so a guidance pop-over lying across the dialog cannot swallow them.
                self.drv.execute_script("arguments[0].focus(); arguments[0].select();", field)
                ActionChains(d).send_keys(Keys.DELETE).send_keys(new_name).perform()
                return field.get_attribute("value") == new_name
            except (StopIteration, WebDriverException):
                return False

        self.wait("name typed", type_name)
        save = self.drv.find_element(
            By.CSS_SELECTOR,
            "[data-component-id='mlflow.experiment.metadata_editor.modal.footer.ok']",
        )
        self.click_when("save", lambda d: [save])
        error = self.wait(
            "rename error shown",
            lambda d: [
                line
                for line in self.body_text().splitlines()
                if line.startswith("PERMISSION_DENIED")
            ],
        )[0]
        self.step(shot, rename_error=error)
        return error

    def sign_out(self, shot):
        self.drv.get(f"{self.base}/mlflow/oauth2/signout")
        self.wait("sign-in form after sign-out", lambda d: d.find_elements(By.ID, "username"))
        self.step(shot, signed_out_to=self.drv.current_url)
        return self.drv.current_url

    def console_errors(self):
        try:
            return [e["message"] for e in self.drv.get_log("browser") if e["level"] == "SEVERE"]
        except WebDriverException:
            return []


def main(argv):
    if len(argv) != 6:
        sys.exit(__doc__)
    base, exp_id, exp_name, run_id, run_name, out = argv
    os.makedirs(out, exist_ok=True)
    flow = Flow(base.rstrip("/"), exp_id, exp_name, run_id, run_name, out)
    try:
        result = {}
        result["writer_form_url"] = flow.sign_in("writer", shot_form=True)
        flow.experiments("02-writer-experiments")
        flow.run_and_artifact("03-writer-run", "04-writer-artifact")
        result["writer_signed_out_to"] = flow.sign_out("05-writer-signed-out")
        result["reader_form_url"] = flow.sign_in("reader", shot_form=False)
        flow.experiments("06-reader-experiments")
        flow.run_and_artifact("07-reader-run", "08-reader-artifact")
        result["reader_rename_error"] = flow.rename_refused("09-reader-rename-refused")
        result["reader_signed_out_to"] = flow.sign_out("10-reader-signed-out")
        result["console_errors"] = flow.console_errors()
        result["steps"] = flow.steps
    finally:
        flow.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])

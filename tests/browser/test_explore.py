import pytest
from tests.browser.conftest import SCREENSHOTS, DEMO_USER, DEMO_PASSWORD

def dump(page, name):
    page.screenshot(path=SCREENSHOTS / f"x_{name}.png")
    print("=====", name, page.url)

def test_explore(home_assistant, page, meter):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(home_assistant.url)
    page.locator("input[name=username]").fill(DEMO_USER)
    page.locator("input[name=password]").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda u: "auth" not in u and u.rstrip("/") != home_assistant.url)
    page.goto(home_assistant.url + "/config/integrations/dashboard")
    page.get_by_role("button", name="Add integration").click()
    page.get_by_placeholder("Search for a brand name").fill("Smarty P1")
    page.wait_for_timeout(1000)
    dump(page, "search")
    page.get_by_text("Smarty P1", exact=True).click()
    page.wait_for_timeout(2000)
    dump(page, "menu")
    page.get_by_text("USB P1 cable (serial port)").click()
    page.wait_for_timeout(2000)
    dump(page, "serial")
    page.get_by_text("Enter the path manually").click()
    page.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(1000)
    dump(page, "manual")
    for i, el in enumerate(page.locator("input").all()):
        print(i, el.evaluate("e => e.outerHTML"))
    page.get_by_label("Path").fill(meter.path)
    page.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(4000)
    dump(page, "key")
    for i, el in enumerate(page.locator("input").all()):
        print(i, el.evaluate("e => e.outerHTML"))
    page.get_by_label("Decryption key").fill("00112233445566778899AABBCCDDEEFF")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(4000)
    dump(page, "wrongkey")
    page.get_by_label("Decryption key").fill("0102030405060708090A0B0C0D0E0F10")
    page.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(4000)
    dump(page, "created")


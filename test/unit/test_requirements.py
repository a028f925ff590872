"""The pinned requirements of each tested ROS 2 distro stay in step: Kilted's files are Jazzy's with Kilted's wheels in
place of Jazzy's, and every other pin the same (the lab's, requirements-lab.txt, is one file both include)."""
import re

from test.conftest import REPO_ROOT

ROS_WHEEL = re.compile(r"ros-(jazzy|kilted)-")


def read(name: str) -> tuple[list[str], dict[str, str]]:
    """A requirements file's `-r` includes and its own pins (name with extras -> the rest of the line)."""
    includes, pins = [], {}
    for line in (REPO_ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            includes.append(line[3:].strip())
        elif line:
            requirement = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", line)
            assert requirement, f"{name}: cannot read {line!r}"
            pins[requirement[1]] = requirement[2]
    return includes, pins


def as_jazzy(pins: dict[str, str]) -> list[str]:
    return [ROS_WHEEL.sub("ros-jazzy-", name) for name in pins]


def test_the_kilted_runtime_is_jazzys_package_for_package():
    _, jazzy = read("requirements-runtime.txt")
    _, kilted = read("requirements-runtime-kilted.txt")
    assert as_jazzy(kilted) == list(jazzy), "requirements-runtime-kilted.txt lists other packages than Jazzy's"
    assert all(name.startswith("ros-kilted-") for name in kilted if ROS_WHEEL.match(name))
    assert {n: s for n, s in kilted.items() if not ROS_WHEEL.match(n)} == \
        {n: s for n, s in jazzy.items() if not ROS_WHEEL.match(n)}, "a non-ROS pin differs between the distros"


def test_each_distros_set_up_is_its_runtime_its_build_tools_and_the_one_lab():
    jazzy_includes, jazzy = read("requirements.txt")
    kilted_includes, kilted = read("requirements-kilted.txt")
    assert jazzy_includes == ["requirements-runtime.txt", "requirements-lab.txt"]
    assert kilted_includes == ["requirements-runtime-kilted.txt", "requirements-lab.txt"]
    assert all(n.startswith("ros-jazzy-") for n in jazzy if ROS_WHEEL.match(n))
    assert all(n.startswith("ros-kilted-") for n in kilted if ROS_WHEEL.match(n))
    assert {n: s for n, s in kilted.items() if not ROS_WHEEL.match(n)} == \
        {n: s for n, s in jazzy.items() if not ROS_WHEEL.match(n)}, "a non-ROS build pin differs between the distros"


def test_every_requirement_is_pinned():
    for name in ("requirements-runtime.txt", "requirements-runtime-kilted.txt", "requirements.txt",
                 "requirements-kilted.txt", "requirements-lab.txt"):
        _, pins = read(name)
        assert all(spec.startswith("==") for spec in pins.values()), f"{name}: {pins}"

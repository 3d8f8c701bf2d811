"""The Dockerfile's build stages as JSON, parsed by dockerfile-parse, for
tests/tests/image.rs: [{"from": image, "as": name or null, "instructions":
[{"instruction": "COPY", "value": "..."}, ...]}, ...]. Line continuations
are joined and comments dropped by the parser; the test reads the values.

    dockerfile_stages.py Dockerfile > stages.json
"""

import json
import sys

from dockerfile_parse import DockerfileParser


def main():
    parser = DockerfileParser(sys.argv[1])
    stages = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            words = item["value"].split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"from": words[0], "as": name, "instructions": []})
        elif item["instruction"] != "COMMENT":
            stages[-1]["instructions"].append({"instruction": item["instruction"], "value": item["value"]})
    json.dump(stages, sys.stdout)


if __name__ == "__main__":
    main()

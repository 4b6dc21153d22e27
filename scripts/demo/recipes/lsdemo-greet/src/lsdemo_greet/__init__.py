"""lockship demo package (noarch: python) with a console entry point."""

__version__ = "0.3.0"


def main() -> None:
    print("greetings from lsdemo_greet")


if __name__ == "__main__":
    main()

"""``python -m agents.simulator``: serve the simulator until interrupted."""

from agents.simulator.cli import main

if __name__ == "__main__":
    main()

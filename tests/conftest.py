from rtserver.logs import configure_logging

configure_logging("info")

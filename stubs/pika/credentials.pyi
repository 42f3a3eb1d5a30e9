class PlainCredentials:
    username: str
    password: str
    erase_on_connect: bool
    def __init__(self, username: str, password: str, erase_on_connect: bool = False) -> None: ...

class ExternalCredentials:
    erase_on_connect: bool
    def __init__(self) -> None: ...

from twisted.application.service import ServiceMaker

kong = ServiceMaker("Kong", "kongtx.tap", "An API gateway node that does what Kong 0.9 does", "kong")
